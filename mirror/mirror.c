/* mp-mirror's state and life cycle: versions from the upstream are applied
 * to the in-memory namespace as they arrive (a read sees them at once),
 * journaled, fsynced in batches and then acknowledged; snapshots replace the
 * whole state; any doubt about the state (a digest that differs, a journal
 * that does not check, another cluster) throws it away and bootstraps again
 * rather than serve it. */
#include <errno.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "change.h"
#include "log.h"
#include "mirror.h"
#include "netaddr.h"
#include "paths.h"
#include "policy.h"
#include "replication.h"
#include "tls.h"

#define HOUSEKEEPING_MS 1000

static int exit_code;

int64_t mirror_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- persistence ---- */

static void *sync_thread(void *arg)
{
	struct mirror *m = arg;
	pthread_mutex_lock(&m->sync_lock);
	for (;;) {
		while (!m->sync_stop && m->sync_fd < 0)
			pthread_cond_wait(&m->sync_cond, &m->sync_lock);
		if (m->sync_fd < 0)
			break;
		int fd = m->sync_fd;
		pthread_mutex_unlock(&m->sync_lock);
		int r = fdatasync(fd) < 0 ? -errno : 0;
		close(fd);
		pthread_mutex_lock(&m->sync_lock);
		m->sync_fd = -1;
		m->sync_result = r;
		m->sync_done = true;
		event_active(m->synced_ev, EV_READ, 0);
	}
	pthread_mutex_unlock(&m->sync_lock);
	return NULL;
}

static void arm_sync(struct mirror *m);

static void synced_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mirror *m = arg;
	pthread_mutex_lock(&m->sync_lock);
	bool done = m->sync_done;
	int r = m->sync_result;
	m->sync_done = false;
	pthread_mutex_unlock(&m->sync_lock);
	if (!done)
		return;
	m->sync_busy = false;
	if (r < 0) {
		if (!m->journal_failing)
			log_error("journal: fsync failed: %s; versions are served from memory but "
			          "not acknowledged",
			          strerror(-r));
		m->journal_failing = true;
	} else if (m->sync_job_gen == m->sync_gen) {
		if (m->journal_failing)
			log_info("journal: written and synced again up to version %llu; "
			         "acknowledging",
			         (unsigned long long)m->sync_version);
		m->journal_failing = false;
		journal_set_durable(m->journal, m->sync_version);
		if (m->sync_version > m->durable) {
			m->durable = m->sync_version;
			upstream_ack(m->up, m->durable);
		}
	}
	if (m->sync_again) {
		m->sync_again = false;
		arm_sync(m);
	}
}

static void sync_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mirror *m = arg;
	m->sync_armed = false;
	if (m->sync_busy) {
		m->sync_again = true;
		return;
	}
	int dupfd;
	uint64_t version;
	int r = journal_flush(m->journal, &dupfd, &version);
	if (r < 0) {
		if (!m->journal_failing)
			log_error("journal: write failed: %s; versions are served from memory but "
			          "not acknowledged",
			          strerror(-r));
		m->journal_failing = true;
		return;
	}
	if (dupfd < 0 || version <= m->durable) {
		if (dupfd >= 0)
			close(dupfd);
		return;
	}
	m->sync_busy = true;
	m->sync_version = version;
	m->sync_job_gen = m->sync_gen;
	pthread_mutex_lock(&m->sync_lock);
	m->sync_fd = dupfd;
	pthread_cond_signal(&m->sync_cond);
	pthread_mutex_unlock(&m->sync_lock);
}

static void arm_sync(struct mirror *m)
{
	if (m->sync_armed)
		return;
	m->sync_armed = true;
	struct timeval tv = {(time_t)(m->cfg.fsync_interval_ms / 1000),
	                     (suseconds_t)(m->cfg.fsync_interval_ms % 1000) * 1000};
	evtimer_add(m->sync_ev, &tv);
}

static void start_snapshot(struct mirror *m, bool in_process)
{
	char *err = NULL;
	if (m->snapshot_pid > 0)
		return;
	int r = journal_snapshot(m->journal, m->ns, m->version, m->next_ino, m->cluster_id,
	                         in_process, &err);
	if (r < 0) {
		log_error("%s", err ? err : "journal snapshot failed");
		free(err);
		return;
	}
	if (r > 0)
		m->snapshot_pid = r;
	else
		m->durable = m->version;
}

static void sigchld_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mirror *m = arg;
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != m->snapshot_pid)
			continue;
		m->snapshot_pid = 0;
		char *err = NULL;
		if (journal_snapshot_done(m->journal, status, &err) < 0) {
			log_error("%s", err ? err : "snapshot failed");
			free(err);
		}
	}
}

/* ---- state changes ---- */

static void reset_log(struct mirror *m)
{
	changelog_free(m->log);
	m->log = changelog_new(m->cfg.cache_versions, m->cfg.cache_bytes);
	if (m->log == NULL)
		fatal("out of memory");
	changelog_set_store_oldest(m->log, m->version + 1);
	stream_set_log(m->stream, m->log);
}

/* Throws the state away; the next subscription starts from nothing. */
static void discard_state(struct mirror *m, const char *why)
{
	log_error("site %s: %s; discarding the replica and bootstrapping again", m->cfg.site, why);
	metric_add(m->m_divergences, 1);
	namespace_free(m->ns);
	m->ns = namespace_new();
	namespace_free(m->boot_ns);
	m->boot_ns = NULL;
	if (m->ns == NULL)
		fatal("out of memory");
	m->version = m->durable = 0;
	m->next_ino = NODE_ROOT_INO + 1;
	namespace_digest(m->ns, m->digest);
	m->ready = false;
	if (m->snapshot_pid > 0) {
		kill(m->snapshot_pid, SIGKILL);
		waitpid(m->snapshot_pid, NULL, 0);
		m->snapshot_pid = 0;
	}
	m->upstream_version = 0;
	m->behind_since_ns = 0;
	m->sync_gen++;
	journal_reset(m->journal);
	reset_log(m);
	/* Subscribers must not be handed the empty state: they keep theirs
	 * and come back (or go elsewhere) once this replica is whole again. */
	stream_disconnect_all(m->stream, "this replica is bootstrapping again");
}

/* ---- the policy in force, and the replication it drives ---- */

const char *mirror_replica_of(void *arg, const char *bucket, const char *key, const char *etag)
{
	struct mirror *m = arg;
	return replication_replica_of(m->repl, bucket, key, etag);
}

static int start_replication(struct mirror *m)
{
	if (m->repl != NULL)
		return 0;
	struct replication_config rc = {
	    .site = m->cfg.site,
	    .data_dir = m->cfg.data_dir,
	    .site_config = m->cfg.replication_site_config,
	    .sweep_interval_ms = m->cfg.replication_sweep_ms,
	    .scrub_interval_ms = m->cfg.replication_scrub_ms,
	    .retry_max_ms = m->cfg.replication_retry_max_ms,
	    .threads = (unsigned)m->cfg.replication_threads,
	    .gc_max_delete_count = m->cfg.replication_gc_max_count,
	    .gc_max_delete_ratio = (double)m->cfg.replication_gc_max_permille / 1000.0,
	};
	char err[600];
	int r = replication_new(&rc, m->metrics, &m->repl, err, sizeof(err));
	if (r < 0) {
		log_error("site %s: replication does not start: %s", m->cfg.site, err);
		return r;
	}
	replication_set_origin(m->repl, "origin", m->origin);
	return 0;
}

static void start_warmup(struct mirror *m)
{
	struct warmup_config wc = {
	    .site = m->cfg.site,
	    .data_dir = m->cfg.data_dir,
	    .token = m->token,
	    .secret = m->secret,
	    .secret_len = m->secret_len,
	    .clock_scale = (double)m->cfg.warmup_clock_scale,
	};
	char err[600];
	if (warmup_new(&wc, m->metrics, &m->warm, err, sizeof(err)) < 0)
		log_error("site %s: warmup does not start: %s", m->cfg.site, err);
}

/* Takes up the namespace's policy record when it changed: a policy that
 * does not parse here (checked at the primary; a newer primary may know
 * more) is logged and the previous one stays in force. */
/* mp gc --confirm writes the namespace's gc-confirm record: every site
 * whose breaker holds a deletion lets it go, once. */
static void follow_gc_confirm(struct mirror *m)
{
	struct node_rec rec;
	if (namespace_lookup(m->ns, 0, "gc-confirm", 10, &rec) < 0 ||
	    rec.ctime <= m->gc_confirm_seen)
		return;
	m->gc_confirm_seen = rec.ctime;
	replication_gc_confirm(m->repl);
}

static void follow_policy(struct mirror *m, bool sweep)
{
	follow_gc_confirm(m);
	if (m->repl_failed_ns != 0 && mirror_now_ns() - m->repl_failed_ns < 10 * 1000000000LL)
		return;
	struct node_rec rec;
	if (namespace_lookup(m->ns, 0, "policy", 6, &rec) < 0) {
		if (m->policy_ino != 0) {
			m->policy_ino = 0;
			replication_set_policy(m->repl, NULL, m->ns);
			warmup_set_policy(m->warm, NULL, m->ns, m->version, 0);
		} else if (sweep) {
			replication_sweep(m->repl, m->ns);
		}
		return;
	}
	uint64_t h[2];
	namespace_record_hash(&rec, h);
	if (rec.ino == m->policy_ino && memcmp(h, m->policy_hash, sizeof(h)) == 0) {
		if (sweep)
			replication_sweep(m->repl, m->ns);
		return;
	}
	m->policy_ino = rec.ino;
	m->policy_ctime = rec.ctime;
	memcpy(m->policy_hash, h, sizeof(h));
	struct policy *p = NULL;
	struct policy_errors errs = {0};
	int r = policy_parse_buffer("policy", rec.extra, rec.extra_len, NULL, &p, &errs);
	if (r < 0) {
		log_error("site %s: the policy of version %llu does not parse here (%s); the "
		          "previous one stays in force",
		          m->cfg.site, (unsigned long long)m->version,
		          errs.n > 0 ? errs.v[0].text : strerror(-r));
		policy_errors_clear(&errs);
		return;
	}
	log_info("site %s: policy of version %llu in force: %zu replication rules, %zu warmup "
	         "pipelines",
	         m->cfg.site, (unsigned long long)m->version, p->n_replication, p->n_warmup);
	/* Warmup keeps its own copy: replication owns p. */
	struct policy *warm_policy = NULL;
	if (policy_parse_buffer("policy", rec.extra, rec.extra_len, NULL, &warm_policy, &errs) == 0)
		warmup_set_policy(m->warm, warm_policy, m->ns, m->version, rec.ctime);
	policy_errors_clear(&errs);
	if (start_replication(m) < 0) {
		/* Taken up again (and retried) in 10 s, when a version comes. */
		m->repl_failed_ns = mirror_now_ns();
		m->policy_ino = 0;
		policy_free(p);
		return;
	}
	m->repl_failed_ns = 0;
	replication_set_policy(m->repl, p, m->ns);
}

static void touched(void *arg, uint64_t ino)
{
	struct mirror *m = arg;
	replication_touched(m->repl, m->ns, ino);
}

static void warm_touched(void *arg, uint64_t ino)
{
	struct mirror *m = arg;
	warmup_touched(m->warm, m->ns, ino);
}

static enum upstream_verdict on_hello_ok(void *arg, const char *cluster_id, const char *origin)
{
	struct mirror *m = arg;
	if (strcmp(m->origin, origin) != 0) {
		log_info("site %s: the upstream announces origin '%s'", m->cfg.site, origin);
		snprintf(m->origin, sizeof(m->origin), "%s", origin);
		replication_set_origin(m->repl, "origin", origin);
		/* Cascaded mirrors learned the old one at their HELLO and pass
		 * it on: have them come back for this one. */
		if (stream_subscribers(m->stream) > 0)
			stream_disconnect_all(m->stream, "the upstream's origin changed");
	}
	if (m->cluster_id[0] != '\0' && strcmp(m->cluster_id, cluster_id) != 0) {
		char why[200];
		snprintf(why, sizeof(why),
		         "the upstream belongs to cluster '%s', this replica to '%s'", cluster_id,
		         m->cluster_id);
		discard_state(m, why);
		snprintf(m->cluster_id, sizeof(m->cluster_id), "%s", cluster_id);
		return UPSTREAM_REBOOTSTRAP;
	}
	if (m->cluster_id[0] == '\0')
		snprintf(m->cluster_id, sizeof(m->cluster_id), "%s", cluster_id);
	return UPSTREAM_OK;
}

static uint64_t on_position(void *arg, uint8_t digest[DIGEST_LEN])
{
	struct mirror *m = arg;
	memcpy(digest, m->digest, DIGEST_LEN);
	return m->version;
}

static void note_upstream_version(struct mirror *m, uint64_t v)
{
	if (v > m->upstream_version)
		m->upstream_version = v;
	if (m->upstream_version > m->version) {
		if (m->behind_since_ns == 0)
			m->behind_since_ns = mirror_now_ns();
	} else {
		m->behind_since_ns = 0;
	}
}

static void on_subscribed(void *arg, uint64_t upstream_version, bool snapshot)
{
	struct mirror *m = arg;
	m->last_heard_ns = mirror_now_ns();
	if (m->fresh_ns < m->last_heard_ns - (int64_t)m->cfg.heartbeat_interval_ms * 1000000)
		m->fresh_ns = m->last_heard_ns;
	/* The upstream may be another one than before (failover, another
	 * cluster): its version is what it says now. */
	m->upstream_version = upstream_version;
	m->behind_since_ns = 0;
	note_upstream_version(m, upstream_version);
	if (snapshot) {
		/* Our state is about to be replaced, perhaps because it
		 * diverged: stop serving it until the snapshot is in. */
		m->ready = false;
		return;
	}
	/* A journal needs a base to replay onto: starting from nothing, the
	 * empty state at version 0 is it. */
	if (m->version == 0 && m->durable == 0)
		start_snapshot(m, true);
	/* Without a snapshot the upstream vouched for our state at our
	 * version (it checked the digest): it is worth reading. */
	if (!m->ready) {
		m->ready = true;
		mirror_wake_parked(m, false);
	}
}

static enum upstream_verdict on_apply(void *arg, const uint8_t *record, size_t len)
{
	struct mirror *m = arg;
	char err[300];
	uint64_t v;
	int64_t time = 0;
	int r = change_apply(m->ns, record, len, m->version + 1, &v, &time, &m->next_ino, err,
	                     sizeof(err));
	if (r == -EBADMSG) {
		discard_state(m, err);
		return UPSTREAM_REBOOTSTRAP;
	}
	if (r < 0) {
		log_warn("upstream %s: %s", upstream_address(m->up), err);
		return UPSTREAM_RECONNECT;
	}
	m->version = v;
	namespace_digest(m->ns, m->digest);
	m->last_heard_ns = mirror_now_ns();
	m->ready = true;
	metric_add(m->m_applied, 1);
	uint8_t *copy = malloc(len);
	if (copy == NULL)
		fatal("out of memory");
	memcpy(copy, record, len);
	m->version_time = time;
	if (time > m->fresh_ns)
		m->fresh_ns = time;
	struct changelog_entry e = {.version = v, .time = time, .record = copy, .record_len = len};
	memcpy(e.digest, m->digest, DIGEST_LEN);
	changelog_append(m->log, &e);
	changelog_set_store_oldest(m->log, changelog_oldest_cached(m->log));
	r = journal_append(m->journal, v, record, len);
	if (r < 0 && !m->journal_failing) {
		log_error("journal: cannot append version %llu: %s", (unsigned long long)v,
		          strerror(-r));
		m->journal_failing = true;
	}
	arm_sync(m);
	note_upstream_version(m, v);
	stream_publish(m->stream, v, v);
	mirror_wake_parked(m, false);
	if (m->repl != NULL)
		change_each_put(record, len, touched, m);
	if (m->warm != NULL) {
		change_each_put(record, len, warm_touched, m);
		warmup_applied(m->warm, m->ns, v, time);
	}
	follow_policy(m, false);
	return UPSTREAM_OK;
}

static enum upstream_verdict on_snapshot_begin(void *arg, uint64_t version,
                                               const uint8_t digest[DIGEST_LEN], uint64_t count,
                                               uint64_t next_ino, const char *cluster_id)
{
	struct mirror *m = arg;
	namespace_free(m->boot_ns);
	m->boot_ns = namespace_new();
	if (m->boot_ns == NULL)
		fatal("out of memory");
	m->boot_version = version;
	m->boot_count = count;
	m->boot_next_ino = next_ino;
	memcpy(m->boot_digest, digest, DIGEST_LEN);
	snprintf(m->boot_cluster, sizeof(m->boot_cluster), "%s", cluster_id);
	m->last_heard_ns = mirror_now_ns();
	log_info("site %s: receiving a snapshot of %llu entries at version %llu", m->cfg.site,
	         (unsigned long long)count, (unsigned long long)version);
	return UPSTREAM_OK;
}

static enum upstream_verdict on_snapshot_node(void *arg, const struct node_rec *rec)
{
	struct mirror *m = arg;
	if (m->boot_ns == NULL || namespace_load_node(m->boot_ns, rec) < 0) {
		log_warn("snapshot: inode %llu does not load", (unsigned long long)rec->ino);
		return UPSTREAM_RECONNECT;
	}
	return UPSTREAM_OK;
}

static enum upstream_verdict on_snapshot_end(void *arg, uint64_t version, uint64_t count)
{
	struct mirror *m = arg;
	char why[200];
	uint8_t have[DIGEST_LEN];
	if (m->boot_ns == NULL || version != m->boot_version || count != m->boot_count ||
	    namespace_count(m->boot_ns) != count ||
	    namespace_load_finish(m->boot_ns, why, sizeof(why)) < 0 ||
	    (namespace_digest(m->boot_ns, have), memcmp(have, m->boot_digest, DIGEST_LEN) != 0)) {
		log_warn("snapshot at version %llu does not check (count or digest); retrying",
		         (unsigned long long)version);
		namespace_free(m->boot_ns);
		m->boot_ns = NULL;
		return UPSTREAM_RECONNECT;
	}
	namespace_free(m->ns);
	m->ns = m->boot_ns;
	m->boot_ns = NULL;
	m->version = m->boot_version;
	m->next_ino = m->boot_next_ino;
	memcpy(m->digest, have, DIGEST_LEN);
	snprintf(m->cluster_id, sizeof(m->cluster_id), "%s", m->boot_cluster);
	m->ready = true;
	m->version_time = 0;
	follow_policy(m, true);
	m->last_heard_ns = mirror_now_ns();
	if (m->fresh_ns < m->last_heard_ns)
		m->fresh_ns = m->last_heard_ns;
	metric_add(m->m_bootstraps, 1);
	if (m->snapshot_pid > 0) {
		kill(m->snapshot_pid, SIGKILL);
		waitpid(m->snapshot_pid, NULL, 0);
		m->snapshot_pid = 0;
	}
	m->sync_gen++;
	journal_reset(m->journal);
	start_snapshot(m, false);
	reset_log(m);
	note_upstream_version(m, version);
	stream_reset(m->stream);
	log_info("site %s: bootstrapped %llu entries at version %llu", m->cfg.site,
	         (unsigned long long)count, (unsigned long long)version);
	mirror_wake_parked(m, false);
	return UPSTREAM_OK;
}

static void on_diverged(void *arg, const char *why)
{
	discard_state(arg, why);
}

static void on_heartbeat(void *arg, uint64_t upstream_version, int64_t time_ns)
{
	struct mirror *m = arg;
	m->last_heard_ns = mirror_now_ns();
	if (time_ns > m->fresh_ns)
		m->fresh_ns = time_ns;
	note_upstream_version(m, upstream_version);
}

static void on_state(void *arg, enum upstream_state state, const char *address)
{
	struct mirror *m = arg;
	log_info("upstream %s: %s", address, upstream_state_name(state));
	if (state == UPSTREAM_DISCONNECTED)
		metric_add(m->m_reconnects, 1);
}

static const struct upstream_ops upstream_ops = {
    .hello_ok = on_hello_ok,
    .position = on_position,
    .subscribed = on_subscribed,
    .apply = on_apply,
    .snapshot_begin = on_snapshot_begin,
    .snapshot_node = on_snapshot_node,
    .snapshot_end = on_snapshot_end,
    .diverged = on_diverged,
    .heartbeat = on_heartbeat,
    .state_changed = on_state,
};

/* ---- timers and signals ---- */

static void update_metrics(struct mirror *m)
{
	metric_set(m->m_version, (double)m->version);
	metric_set(m->m_lag_versions, (double)mirror_lag_versions(m));
	metric_set(m->m_lag_seconds, mirror_lag_seconds(m));
	metric_set(m->m_parked, (double)m->nparked);
	metric_set(m->m_entries, (double)namespace_count(m->ns));
	stream_update_metrics(m->stream);
}

static void housekeeping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mirror *m = arg;
	if (m->ready && m->version > 0 &&
	    journal_bytes_since_snapshot(m->journal) > m->cfg.snapshot_every_bytes)
		start_snapshot(m, false);
	if (m->ready && m->repl_failed_ns != 0)
		follow_policy(m, false); /* replication did not start: try again */
	if (m->ready && replication_sweep_due(m->repl, mirror_now_ns()))
		replication_sweep(m->repl, m->ns);
	warmup_tick(m->warm, m->ready ? m->ns : NULL, m->version, m->members);
	update_metrics(m);
}

void mirror_site_report(struct mirror *m, struct site_report *r)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->site, sizeof(r->site), "%s", m->cfg.site);
	snprintf(r->upstream, sizeof(r->upstream), "%s", upstream_address(m->up));
	snprintf(r->state, sizeof(r->state), "%s", mirror_state(m));
	r->version = m->version;
	r->lag_versions = mirror_lag_versions(m);
	r->lag_ms = (uint64_t)(mirror_lag_seconds(m) * 1000);
	replication_totals(m->repl, &r->repl_pending_objects, &r->repl_pending_bytes,
	                   &r->repl_failing_objects);
	r->cache_nodes = members_count(m->members);
	members_totals(m->members, &r->cache_used, &r->cache_capacity);
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mirror *m = arg;
	stream_heartbeat(m->stream);
	/* This site and the ones behind it, to the upstream: the primary
	 * shows the whole tree. */
	struct site_report self;
	mirror_site_report(m, &self);
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msg_begin(&sb, &pk, MT_SITE_REPORT, 0, 1);
	site_report_pack(&pk, &self, m->sites, mirror_now_ns());
	msg_end(&sb);
	upstream_send(m->up, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void park_cb(evutil_socket_t fd, short what, void *arg)
{
	mirror_wake_parked(arg, true);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct mirror *m = arg;
	if (sig == SIGHUP) {
		struct mirror_config next;
		char *err = NULL;
		if (m->config_path == NULL) {
			log_info("SIGHUP: no configuration file (-c) to reload");
			return;
		}
		if (mirror_config_load(m->config_path, &next, &err) < 0) {
			log_error("reload failed, keeping the running configuration: %s", err);
			free(err);
			return;
		}
		/* What can change while running; the rest waits for a
		 * restart. */
		m->cfg.read_deadline_ms = next.read_deadline_ms;
		m->cfg.max_lag_ms = next.max_lag_ms;
		m->cfg.fsync_interval_ms = next.fsync_interval_ms;
		m->cfg.snapshot_every_bytes = next.snapshot_every_bytes;
		m->cfg.log_level = next.log_level;
		log_set_level((enum log_level)next.log_level);
		server_set_limits(m->server, next.max_frame_bytes, next.idle_timeout_ms,
		                  next.max_connections);
		mirror_config_free(&next);
		log_info("configuration reloaded from %s (addresses, upstreams and TLS need a "
		         "restart)",
		         m->config_path);
		return;
	}
	if (m->draining) {
		exit_code = 1;
		event_base_loopexit(m->base, NULL);
		return;
	}
	log_info("%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	m->draining = true;
	server_stop_listening(m->server);
	struct timeval tv = {0, 200000};
	event_base_loopexit(m->base, &tv);
}

/* ---- start-up ---- */

static uint64_t applied_version(void *owner)
{
	struct mirror *m = owner;
	return m->version;
}

static void conn_closed(void *owner, struct conn *c)
{
	struct mirror *m = owner;
	if (c->sub != NULL)
		stream_detach(m->stream, c);
}

static void conn_writable(void *owner, struct conn *c)
{
	struct mirror *m = owner;
	stream_pump(m->stream, c);
}

static const struct server_ops mirror_server_ops = {
    .dispatch = mirror_dispatch,
    .closed = conn_closed,
    .writable = conn_writable,
    .version = applied_version,
};

static void run_now(void *owner, void (*fn)(void *ctx), void *ctx)
{
	/* A mirror's namespace always equals its applied version. */
	fn(ctx);
}

static void register_metrics(struct mirror *m)
{
	struct metrics *x = m->metrics;
	m->m_version = metrics_gauge(x, "mp_mirror_applied_version", "Last applied version");
	m->m_lag_versions =
	    metrics_gauge(x, "mp_mirror_lag_versions", "Versions the upstream has beyond ours");
	m->m_lag_seconds = metrics_gauge(x, "mp_mirror_lag_seconds",
	                                 "How long the replica has been behind its upstream");
	m->m_applied = metrics_counter(x, "mp_mirror_applied_versions_total", "Versions applied");
	m->m_parked = metrics_gauge(x, "mp_mirror_parked_reads", "Reads waiting for min_version");
	m->m_stale = metrics_counter(x, "mp_mirror_stale_reads_total",
	                             "Reads answered STALE after their deadline");
	m->m_bootstraps =
	    metrics_counter(x, "mp_mirror_bootstraps_total", "Snapshots received and installed");
	m->m_reconnects =
	    metrics_counter(x, "mp_mirror_reconnects_total", "Upstream connections lost");
	m->m_divergences = metrics_counter(x, "mp_mirror_divergences_total",
	                                   "Replicas discarded (digest, journal, cluster)");
	m->m_reads = metrics_counter(x, "mp_mirror_reads_total", "Read requests");
	m->m_connections = metrics_gauge(x, "mp_mirror_connections", "Open connections");
	m->m_frames_rejected = metrics_counter(x, "mp_mirror_frames_rejected_total",
	                                       "Frames refused as malformed or oversized");
	m->m_entries = metrics_gauge(x, "mp_mirror_namespace_entries", "Inodes in the replica");
	m->m_journal_failing =
	    metrics_gauge(x, "mp_mirror_journal_failing",
	                  "1 while the journal cannot be written (disk full, EIO): versions are "
	                  "served from memory but not acknowledged");
}

static void load_journal(struct mirror *m)
{
	char *err = NULL;
	if (journal_open(m->cfg.data_dir, &m->journal, &err) < 0)
		fatal("%s", err);
	struct journal_state st;
	int64_t t0 = mirror_now_ns();
	int r = journal_load(m->journal, &st, &err);
	if (r == -EBADMSG) {
		log_error("%s; discarding it and bootstrapping from the upstream", err);
		free(err);
		metric_add(m->m_divergences, 1);
		journal_reset(m->journal);
		st.ns = NULL;
	} else if (r < 0) {
		fatal("%s", err);
	}
	if (st.ns == NULL) {
		m->ns = namespace_new();
		m->next_ino = NODE_ROOT_INO + 1;
		if (m->ns == NULL)
			fatal("out of memory");
		log_info("site %s: no replica on disk yet; it will bootstrap from the upstream",
		         m->cfg.site);
	} else {
		m->ns = st.ns;
		m->version = m->durable = st.version;
		m->next_ino = st.next_ino;
		snprintf(m->cluster_id, sizeof(m->cluster_id), "%s", st.cluster_id);
		m->ready = true;
		log_info("site %s: loaded %llu entries at version %llu from %s in %.2f s (%llu "
		         "versions replayed%s)",
		         m->cfg.site, (unsigned long long)namespace_count(m->ns),
		         (unsigned long long)m->version, m->cfg.data_dir,
		         (double)(mirror_now_ns() - t0) / 1e9, (unsigned long long)st.replayed,
		         st.truncated_bytes ? ", a torn tail cut off" : "");
	}
	namespace_digest(m->ns, m->digest);
}

static void load_secrets(struct mirror *m)
{
	char *err = NULL;
	if (m->cfg.secret_file != NULL) {
		if (token_load_secret(m->cfg.secret_file, &m->secret, &m->secret_len, &err) < 0)
			fatal("secret: %s", err);
	} else {
		log_warn("no secret_file configured: every client is allowed without a token");
	}
	if (m->cfg.token_file != NULL) {
		char *buf;
		size_t n;
		if (paths_read_file(m->cfg.token_file, TOKEN_MAX_LEN, &buf, &n, NULL, &err) < 0)
			fatal("token_file %s", err);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			n--;
		buf[n] = '\0'; /* the spare byte */
		if (n == 0)
			fatal("token_file %s is empty", m->cfg.token_file);
		m->token = buf;
	}
	if (m->cfg.tls_cert != NULL) {
		struct tls_config tc = {m->cfg.tls_cert, m->cfg.tls_key, m->cfg.tls_client_ca,
		                        m->cfg.tls_verify_clients};
		m->tls = tls_server_ctx(&tc, &err);
		if (m->tls == NULL)
			fatal("%s", err);
	}
	if (m->cfg.upstream_ca != NULL) {
		struct tls_config tc = {m->cfg.upstream_cert, m->cfg.upstream_key,
		                        m->cfg.upstream_ca, false};
		m->upstream_tls = tls_client_ctx(&tc, m->cfg.upstream_server_name, &err);
		if (m->upstream_tls == NULL)
			fatal("%s", err);
	}
}

int mirror_run(struct mirror_config *cfg, const char *config_path)
{
	struct mirror mr, *m = &mr;
	memset(m, 0, sizeof(*m));
	m->cfg = *cfg;
	m->config_path = config_path;
	TAILQ_INIT(&m->parked);
	m->started = mirror_now_ns();
	log_set_prefix("mp-mirror");
	log_set_level((enum log_level)cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() < 0)
		fatal("libevent has no pthreads support");
	m->base = event_base_new();
	if (m->base == NULL)
		fatal("cannot create the event loop");
	m->metrics = metrics_new();
	register_metrics(m);
	load_secrets(m);
	load_journal(m);
	m->log = changelog_new(cfg->cache_versions, cfg->cache_bytes);
	m->members = members_new(cfg->cache_member_timeout_ms);
	m->sites = site_table_new();
	if (m->sites == NULL)
		fatal("out of memory");
	if (m->members == NULL)
		fatal("out of memory");
	if (m->log == NULL)
		fatal("out of memory");
	changelog_set_store_oldest(m->log, m->version + 1);

	struct stream_host shost = {
	    .owner = m,
	    .ns = &m->ns,
	    .version = &m->version,
	    .digest = m->digest,
	    .next_ino = &m->next_ino,
	    .cluster_id = m->cluster_id,
	    .fresh_ns = &m->fresh_ns,
	    .log = m->log,
	    .read_log = NULL,
	    .when_idle = run_now,
	    .heartbeat_ms = cfg->heartbeat_interval_ms,
	    .site_keep_ms = 0,
	    .metrics = m->metrics,
	    .metric_prefix = "mp_mirror",
	};
	m->stream = stream_new(&shost);
	char *err = NULL;
	struct server_config scfg = {
	    .listen = cfg->listen,
	    .role = "mirror",
	    .cluster_id = m->cluster_id,
	    .origin = m->origin,
	    .site = m->cfg.site,
	    .tls = m->tls,
	    .secret = m->secret,
	    .secret_len = m->secret_len,
	    .max_frame_bytes = cfg->max_frame_bytes,
	    .idle_timeout_ms = cfg->idle_timeout_ms,
	    .max_connections = cfg->max_connections,
	    .m_connections = m->m_connections,
	    .m_frames_rejected = m->m_frames_rejected,
	};
	m->server = server_new(m->base, &scfg, &mirror_server_ops, m, &err);
	if (m->stream == NULL || m->server == NULL)
		fatal("%s", err ? err : "out of memory");
	char host[NETADDR_HOST_MAX];
	uint16_t port;
	if (netaddr_split(cfg->admin, host, sizeof(host), &port) < 0)
		fatal("admin address '%s' is not HOST:PORT", cfg->admin);
	m->admin = admin_new(m->base, host, port, &err);
	if (m->admin == NULL)
		fatal("%s", err);
	if (mirror_status_register(m) < 0)
		fatal("cannot register admin routes");
	/* Replication resumes with what its table holds (verified copies serve
	 * reads at once) and with the policy the replica holds. */
	char *repl_db = NULL;
	if (asprintf(&repl_db, "%s/replication.db", cfg->data_dir) > 0 &&
	    access(repl_db, F_OK) == 0)
		start_replication(m);
	free(repl_db);
	/* A confirmation already in the replica was for an earlier hold. */
	struct node_rec confirm;
	m->gc_confirm_seen =
	    namespace_lookup(m->ns, 0, "gc-confirm", 10, &confirm) == 0 ? confirm.ctime : 1;
	start_warmup(m);
	if (m->ready)
		follow_policy(m, true);

	struct upstream_config ucfg = {
	    .addresses = cfg->upstream.items,
	    .naddresses = cfg->upstream.n,
	    .site = cfg->site,
	    .token = m->token,
	    .tls = m->upstream_tls,
	    .tls_name = cfg->upstream_server_name,
	    .backoff_min_ms = cfg->backoff_min_ms,
	    .backoff_max_ms = cfg->backoff_max_ms,
	    .silence_timeout_ms = cfg->upstream_timeout_ms,
	    .max_frame_bytes = cfg->upstream_max_frame_bytes,
	};
	m->up = upstream_new(m->base, &ucfg, &upstream_ops, m);
	if (m->up == NULL)
		fatal("out of memory");

	m->sync_ev = evtimer_new(m->base, sync_cb, m);
	m->synced_ev = event_new(m->base, -1, 0, synced_cb, m);
	m->sync_fd = -1;
	pthread_mutex_init(&m->sync_lock, NULL);
	pthread_cond_init(&m->sync_cond, NULL);
	if (pthread_create(&m->sync_thread, NULL, sync_thread, m) != 0)
		fatal("cannot start the journal sync thread");
	m->park_ev = evtimer_new(m->base, park_cb, m);
	m->housekeeping_ev = event_new(m->base, -1, EV_PERSIST, housekeeping_cb, m);
	m->heartbeat_ev = event_new(m->base, -1, EV_PERSIST, heartbeat_cb, m);
	struct timeval hk = {HOUSEKEEPING_MS / 1000, 0};
	evtimer_add(m->housekeeping_ev, &hk);
	uint64_t tick = cfg->heartbeat_interval_ms / 10 ? cfg->heartbeat_interval_ms / 10 : 1;
	struct timeval hb = {(time_t)(tick / 1000), (suseconds_t)(tick % 1000) * 1000};
	evtimer_add(m->heartbeat_ev, &hb);
	m->sigterm_ev = evsignal_new(m->base, SIGTERM, signal_cb, m);
	m->sigint_ev = evsignal_new(m->base, SIGINT, signal_cb, m);
	m->sighup_ev = evsignal_new(m->base, SIGHUP, signal_cb, m);
	m->sigchld_ev = evsignal_new(m->base, SIGCHLD, sigchld_cb, m);
	evsignal_add(m->sigterm_ev, NULL);
	evsignal_add(m->sigint_ev, NULL);
	evsignal_add(m->sighup_ev, NULL);
	evsignal_add(m->sigchld_ev, NULL);

	log_info("site %s: serving on %s (port %u), admin on %s (port %u), upstream %s%s",
	         cfg->site, cfg->listen, server_port(m->server), cfg->admin, admin_port(m->admin),
	         cfg->upstream.n ? cfg->upstream.items[0] : "(none)",
	         cfg->upstream.n > 1 ? " and more" : "");
	upstream_start(m->up);
	event_base_dispatch(m->base);

	/* Drain: what was applied is made durable before exiting. */
	pthread_mutex_lock(&m->sync_lock);
	m->sync_stop = true;
	pthread_cond_signal(&m->sync_cond);
	pthread_mutex_unlock(&m->sync_lock);
	pthread_join(m->sync_thread, NULL);
	uint64_t durable;
	journal_sync(m->journal, &durable);
	if (m->snapshot_pid > 0) {
		int status;
		waitpid(m->snapshot_pid, &status, 0);
		journal_snapshot_done(m->journal, status, NULL);
	}
	log_info("stopped at version %llu", (unsigned long long)m->version);
	upstream_free(m->up);
	mirror_drop_parked(m);
	server_free(m->server);
	stream_free(m->stream);
	admin_free(m->admin);
	event_free(m->sync_ev);
	event_free(m->synced_ev);
	pthread_mutex_destroy(&m->sync_lock);
	pthread_cond_destroy(&m->sync_cond);
	event_free(m->park_ev);
	event_free(m->housekeeping_ev);
	event_free(m->heartbeat_ev);
	event_free(m->sigterm_ev);
	event_free(m->sigint_ev);
	event_free(m->sighup_ev);
	event_free(m->sigchld_ev);
	changelog_free(m->log);
	journal_close(m->journal);
	replication_free(m->repl);
	m->repl = NULL;
	warmup_free(m->warm);
	m->warm = NULL;
	namespace_free(m->ns);
	namespace_free(m->boot_ns);
	metrics_free(m->metrics);
	members_free(m->members);
	site_table_free(m->sites);
	if (m->tls)
		SSL_CTX_free(m->tls);
	if (m->upstream_tls)
		SSL_CTX_free(m->upstream_tls);
	if (m->secret)
		token_free_secret(m->secret, m->secret_len);
	free(m->token);
	*cfg = m->cfg;
	event_base_free(m->base);
	return exit_code;
}
