/* mp-mirror: one site's read-only replica of the namespace.
 *   main.c      command line
 *   mirror_config.c
 *               the configuration: option table, checks, command-line
 *               overrides (kept for reloads)
 *   mirror.c    state: apply, bootstrap, divergence, journal, lag; life cycle
 *   clients.c   client requests: reads with min_version, refused writes,
 *               cascaded subscribers
 *   status.c    admin endpoints
 *   upstream.c  the link to the primary or another mirror
 *   journal.c   what was applied, on disk
 * Everything runs on one event loop; periodic snapshots are written by a
 * forked child. */
#ifndef MP_MIRROR_H
#define MP_MIRROR_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "changelog.h"
#include "config.h"
#include "journal.h"
#include "members.h"
#include "metrics.h"
#include "mirror_config.h"
#include "namespace.h"
#include "proto.h"
#include "server.h"
#include "sitereport.h"
#include "stream.h"
#include "upstream.h"
#include "warmup.h"

struct mirror {
	struct event_base *base;
	struct mirror_config cfg;
	const char *config_path;
	char cluster_id[CLUSTER_ID_MAX + 1];
	/* The origin bucket's URL the upstream announced at its last HELLO_OK
	 * ("" until then, or when it announced none), passed on to clients. */
	char origin[ORIGIN_MAX + 1];
	/* The replica. */
	struct namespace *ns;
	uint64_t version;
	uint8_t digest[DIGEST_LEN];
	uint64_t next_ino;
	int64_t version_time; /* the primary's commit time of version */
	bool ready;           /* holds a state from its upstream or journal */
	/* A snapshot being received. */
	struct namespace *boot_ns;
	uint64_t boot_version, boot_count, boot_next_ino;
	uint8_t boot_digest[DIGEST_LEN];
	char boot_cluster[CLUSTER_ID_MAX + 1];
	/* Persistence. */
	struct journal *journal;
	uint64_t durable;
	pid_t snapshot_pid;
	bool sync_armed;
	bool journal_failing;
	/* fdatasync runs on its own thread so that applying and reading never
	 * wait behind the disk. */
	pthread_t sync_thread;
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	struct event *synced_ev;
	int sync_fd;           /* handed to the thread, -1 when idle */
	uint64_t sync_version; /* what that fd's flush covered */
	uint64_t sync_gen;     /* bumped when the journal is reset */
	uint64_t sync_job_gen;
	int sync_result;
	bool sync_busy, sync_done, sync_again, sync_stop;
	/* Upstream and lag. */
	struct upstream *up;
	char *token;
	uint64_t upstream_version;
	int64_t last_heard_ns;
	int64_t fresh_ns; /* the primary's clock as of which our state is current */
	int64_t behind_since_ns;
	/* Serving. */
	struct changelog *log;
	struct streamer *stream;
	struct server *server;
	struct admin *admin;
	struct request_list parked;
	size_t nparked;
	struct members *members; /* the site's cache group */
	/* The policy in force (the namespace's record) and the replication
	 * worker it drives; the worker starts with the first policy. */
	uint64_t policy_ino;
	int64_t policy_ctime;
	uint64_t policy_hash[2];
	struct replication *repl;
	int64_t repl_failed_ns;   /* when starting it last failed (retried after 10 s) */
	int64_t gc_confirm_seen;  /* ctime of the gc-confirm record acted on */
	struct site_table *sites; /* reports of the sites cascaded behind this one */
	struct warmup *warm;      /* warmup pipelines (warmup.c) */
	uint8_t *secret;
	size_t secret_len;
	SSL_CTX *tls, *upstream_tls;
	struct event *sync_ev, *park_ev, *housekeeping_ev, *heartbeat_ev;
	struct event *sigterm_ev, *sigint_ev, *sighup_ev, *sigchld_ev;
	bool draining;
	int64_t started;
	struct metrics *metrics;
	struct metric *m_version, *m_lag_versions, *m_lag_seconds, *m_applied, *m_parked, *m_stale,
	    *m_bootstraps, *m_reconnects, *m_divergences, *m_reads, *m_connections,
	    *m_frames_rejected, *m_entries, *m_journal_failing;
};

int64_t mirror_now_ns(void);
int mirror_run(struct mirror_config *cfg, const char *config_path);

/* This site's own line of the tree's report. */
void mirror_site_report(struct mirror *m, struct site_report *ret);
/* The site bucket holding a verified copy of an object, for read_view. */
const char *mirror_replica_of(void *arg, const char *bucket, const char *key, const char *etag);
/* clients.c */
void mirror_dispatch(void *owner, struct conn *c, struct request *r);
/* Answers parked reads whose min_version is met, and times out the rest. */
void mirror_wake_parked(struct mirror *m, bool check_deadlines);
void mirror_drop_parked(struct mirror *m);

/* status.c */
int mirror_status_register(struct mirror *m);
const char *mirror_state(const struct mirror *m);
double mirror_lag_seconds(const struct mirror *m);
uint64_t mirror_lag_versions(const struct mirror *m);
/* Milliseconds since the replica was known current by the primary's clock
 * (heartbeats and applied versions); -1 when no upstream was heard since
 * the start. */
int64_t mirror_staleness_ms(const struct mirror *m);
/* The newest primary version this mirror knows of. */
uint64_t mirror_primary_version(const struct mirror *m);

#endif
