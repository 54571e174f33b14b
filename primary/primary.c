/* mp-primary's life cycle: start-up (store, namespace, listeners), the
 * housekeeping timer, signals (SIGTERM drains, SIGHUP reloads) and
 * shutdown. */
#include <errno.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "admin.h"
#include "log.h"
#include "paths.h"
#include "netaddr.h"
#include "primary.h"
#include "sitereport.h"
#include "proto.h"
#include "tls.h"

#define HOUSEKEEPING_MS         1000
#define RETENTION_EVERY         5 /* housekeeping ticks between retention passes */
#define DRAIN_MAX_NS            (30LL * 1000000000)
#define DRAIN_FLUSH_NS          (2LL * 1000000000)
#define STORE_LOCK_WAIT_S       10
#define CHANGELOG_CACHE_ENTRIES 262144
#define CHANGELOG_CACHE_BYTES   (128u << 20)

static int64_t drain_started;
static unsigned housekeeping_ticks;
static int exit_code;

int64_t primary_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void primary_answer_parked(struct primary *p)
{
	if (committer_busy(p->committer))
		return;
	struct request *r, *next;
	for (r = TAILQ_FIRST(&p->parked_reads); r != NULL; r = next) {
		next = TAILQ_NEXT(r, entry);
		if (conn_alive(r->c) && r->c->pending_writes > 0)
			continue; /* after its connection's writes */
		TAILQ_REMOVE(&p->parked_reads, r, entry);
		if (conn_alive(r->c))
			rpc_read(p, r->c, r->type, r->id, r->frame.body);
		request_free(r);
	}
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct primary *p = arg;
	int64_t now = primary_now_ns();
	bool idle = !committer_busy(p->committer) && committer_queued(p->committer) == 0;
	if (!idle && now - drain_started < DRAIN_MAX_NS) {
		struct timeval tv = {0, 20000};
		evtimer_add(p->drain_ev, &tv);
		return;
	}
	if (!idle) {
		log_error("the store did not take the last writes within 30 s: exiting with %zu "
		          "writes unacknowledged (none of them was reported as done)",
		          committer_queued(p->committer) + (committer_busy(p->committer) ? 1 : 0));
		exit_code = 1;
	} else if (!server_outputs_flushed(p->server) &&
	           now - drain_started < DRAIN_MAX_NS + DRAIN_FLUSH_NS) {
		struct timeval tv = {0, 20000};
		evtimer_add(p->drain_ev, &tv);
		return;
	}
	server_close_all(p->server);
	event_base_loopexit(p->base, NULL);
}

void primary_maybe_finish_drain(struct primary *p)
{
	if (!p->draining || p->drain_ev == NULL || evtimer_pending(p->drain_ev, NULL))
		return;
	struct timeval tv = {0, 0};
	evtimer_add(p->drain_ev, &tv);
}

static void start_drain(struct primary *p, const char *why)
{
	if (p->draining) {
		log_warn("%s again while draining: exiting now", why);
		exit_code = 1;
		event_base_loopexit(p->base, NULL);
		return;
	}
	log_info("%s: draining (no new connections or writes; finishing %zu queued writes)", why,
	         committer_queued(p->committer));
	p->draining = true;
	drain_started = primary_now_ns();
	server_stop_listening(p->server);
	primary_maybe_finish_drain(p);
}

static void retention_pass(struct primary *p)
{
	uint64_t oldest = changelog_store_oldest(p->log);
	uint64_t newest = p->version;
	if (oldest == 0 || newest == 0)
		return;
	uint64_t keep_count = newest >= p->cfg.retention_max_versions
	                          ? newest - p->cfg.retention_max_versions + 1
	                          : 1;
	uint64_t before = 0;
	int64_t cutoff = primary_now_ns() - (int64_t)p->cfg.retention_max_age_ms * 1000000;
	if (store_log_version_before(p->reader, cutoff, &before) < 0) {
		log_warn("retention: %s", store_error(p->reader));
		return;
	}
	/* Keep what either limit wants, what a mirror still needs, and never
	 * more than the hard cap. */
	uint64_t keep_from = keep_count < before + 1 ? keep_count : before + 1;
	uint64_t needed = stream_min_needed(p->stream);
	if (needed < keep_from)
		keep_from = needed;
	if (newest >= p->cfg.retention_hard_cap &&
	    keep_from < newest - p->cfg.retention_hard_cap + 1)
		keep_from = newest - p->cfg.retention_hard_cap + 1;
	if (keep_from > newest)
		keep_from = newest; /* the newest version always stays */
	if (keep_from > oldest) {
		log_debug("retention: trimming the change log below version %llu",
		          (unsigned long long)keep_from);
		committer_trim(p->committer, keep_from);
	}
}

static void housekeeping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct primary *p = arg;
	if (++housekeeping_ticks % RETENTION_EVERY == 0 && !p->draining)
		retention_pass(p);
	stream_update_metrics(p->stream);
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct primary *p = arg;
	stream_heartbeat(p->stream);
}

static void arm_heartbeat(struct primary *p)
{
	/* Ticks at a tenth of the interval: a subscriber quiet for an
	 * interval hears from us within 1.1 intervals. */
	uint64_t tick = p->cfg.heartbeat_interval_ms / 10 ? p->cfg.heartbeat_interval_ms / 10 : 1;
	struct timeval tv = {(time_t)(tick / 1000), (suseconds_t)(tick % 1000) * 1000};
	evtimer_del(p->heartbeat_ev);
	evtimer_add(p->heartbeat_ev, &tv);
}

/* ---- reload ---- */

static bool str_changed(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a != b;
	return strcmp(a, b) != 0;
}

static void reload(struct primary *p)
{
	if (p->config_path == NULL) {
		log_info("SIGHUP: no configuration file (-c) to reload");
		return;
	}
	struct primary_config next;
	char *err = NULL;
	if (primary_config_load(p->config_path, &next, &err) < 0) {
		log_error("reload failed, keeping the running configuration: %s", err);
		free(err);
		return;
	}
	static const struct {
		const char *name;
		size_t off;
	} fixed[] = {
	    {"cluster_id", offsetof(struct primary_config, cluster_id)},
	    {"data_dir", offsetof(struct primary_config, data_dir)},
	    {"store", offsetof(struct primary_config, store)},
	    {"origin", offsetof(struct primary_config, origin)},
	    {"listen", offsetof(struct primary_config, listen)},
	    {"admin", offsetof(struct primary_config, admin)},
	    {"secret_file", offsetof(struct primary_config, secret_file)},
	    {"tls.cert", offsetof(struct primary_config, tls_cert)},
	    {"tls.key", offsetof(struct primary_config, tls_key)},
	    {"tls.client_ca", offsetof(struct primary_config, tls_client_ca)},
	};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		char **a = (char **)((char *)&p->cfg + fixed[i].off);
		char **b = (char **)((char *)&next + fixed[i].off);
		if (str_changed(*a, *b)) {
			log_warn("reload: changing '%s' needs a restart; keeping '%s'",
			         fixed[i].name, *a ? *a : "");
			char *keep = *a ? strdup(*a) : NULL;
			free(*b);
			*b = keep;
		}
	}
	bool heartbeat_changed = next.heartbeat_interval_ms != p->cfg.heartbeat_interval_ms;
	if (next.tls_verify_clients != p->cfg.tls_verify_clients)
		log_warn("reload: changing 'tls.verify_clients' needs a restart; keeping %s",
		         p->cfg.tls_verify_clients ? "true" : "false");
	next.tls_verify_clients = p->cfg.tls_verify_clients;
	primary_config_free(&p->cfg);
	p->cfg = next;
	log_set_level((enum log_level)p->cfg.log_level);
	server_set_limits(p->server, p->cfg.max_frame_bytes, p->cfg.idle_timeout_ms,
	                  p->cfg.max_connections);
	stream_set_heartbeat(p->stream, p->cfg.heartbeat_interval_ms, p->cfg.retention_max_age_ms);
	gc_configure(p->gc);
	if (heartbeat_changed)
		arm_heartbeat(p);
	log_info("configuration reloaded from %s", p->config_path);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct primary *p = arg;
	if (sig == SIGHUP)
		reload(p);
	else
		start_drain(p, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start-up ---- */

static int load_node(void *arg, const struct node_rec *rec)
{
	return namespace_load_node(arg, rec);
}

static int last_version_time(void *arg, const struct store_version *v)
{
	struct primary *p = arg;
	p->version_time = v->time;
	return 0;
}

static void conn_closed(void *owner, struct conn *c)
{
	struct primary *p = owner;
	if (c->sub != NULL)
		stream_detach(p->stream, c);
	primary_maybe_finish_drain(p);
}

static void conn_writable(void *owner, struct conn *c)
{
	struct primary *p = owner;
	stream_pump(p->stream, c);
}

static uint64_t durable_version(void *owner)
{
	struct primary *p = owner;
	return p->version;
}

static const struct server_ops primary_server_ops = {
    .dispatch = rpc_dispatch,
    .closed = conn_closed,
    .writable = conn_writable,
    .version = durable_version,
};

struct log_read {
	changelog_read_fn fn;
	void *arg;
};

static int log_read_adapter(void *arg, const struct store_version *v)
{
	struct log_read *lr = arg;
	struct changelog_entry e = {.version = v->version,
	                            .time = v->time,
	                            .record = (uint8_t *)v->record,
	                            .record_len = v->record_len};
	memcpy(e.digest, v->digest, DIGEST_LEN);
	return lr->fn(lr->arg, &e);
}

static int read_log(void *owner, uint64_t from, size_t max_count, size_t max_bytes,
                    changelog_read_fn fn, void *arg, char *err, size_t errlen)
{
	struct primary *p = owner;
	struct log_read lr = {fn, arg};
	int r = store_read_changes(p->reader, from, max_count, max_bytes, log_read_adapter, &lr);
	if (r < 0 && r != -1)
		snprintf(err, errlen, "%s", store_error(p->reader));
	return r;
}

static void when_idle(void *owner, void (*fn)(void *ctx), void *ctx)
{
	struct primary *p = owner;
	committer_when_idle(p->committer, fn, ctx);
}

static void register_metrics(struct primary *p)
{
	static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
	static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	                                        0.01,   0.025,   0.05,   0.1,   0.25,   1};
	struct metrics *m = p->metrics;
	p->m_version = metrics_gauge(m, "mp_primary_version", "Last durable version");
	p->m_writes = metrics_counter(m, "mp_primary_writes_total", "Writes that made a version");
	p->m_write_errors =
	    metrics_counter(m, "mp_primary_write_errors_total", "Writes refused with an error");
	p->m_reads = metrics_counter(m, "mp_primary_reads_total", "Read requests");
	p->m_batch_size =
	    metrics_histogram(m, "mp_primary_commit_batch_versions", "Versions per group commit",
	                      batch_bounds, sizeof(batch_bounds) / sizeof(batch_bounds[0]));
	p->m_commit_seconds = metrics_histogram(
	    m, "mp_primary_commit_seconds", "Time from forming a batch to its durable commit",
	    latency_bounds, sizeof(latency_bounds) / sizeof(latency_bounds[0]));
	p->m_connections = metrics_gauge(m, "mp_primary_connections", "Open connections");
	p->m_entries = metrics_gauge(m, "mp_primary_namespace_entries", "Inodes in the namespace");
	p->m_frames_rejected = metrics_counter(m, "mp_primary_frames_rejected_total",
	                                       "Frames refused as malformed or oversized");
}

static char *store_url(const struct primary_config *cfg)
{
	if (cfg->store != NULL && cfg->store[0] != '\0')
		return strdup(cfg->store);
	char *url = NULL;
	if (asprintf(&url, "sqlite:%s/meta.db", cfg->data_dir) < 0)
		return NULL;
	return url;
}

/* The origin announced to clients. By default file data goes next to the
 * store, under an absolute path so that it means the same to every client
 * on this machine whatever its working directory. */
static char *origin_url(const struct primary_config *cfg)
{
	if (cfg->origin != NULL && cfg->origin[0] != '\0') {
		char *url = strdup(cfg->origin);
		if (url == NULL)
			fatal("out of memory");
		return url;
	}
	char *dir = NULL, *url = NULL, why[128];
	if (asprintf(&dir, "%s/objects", cfg->data_dir) < 0)
		fatal("out of memory");
	int r = paths_mkdirs(dir);
	if (r < 0)
		fatal("cannot create the origin directory %s: %s", dir, strerror(-r));
	free(dir);
	char *real = realpath(cfg->data_dir, NULL);
	if (real == NULL)
		fatal("data_dir %s: %s", cfg->data_dir, strerror(errno));
	if (asprintf(&url, "file://%s/objects", strcmp(real, "/") == 0 ? "" : real) < 0)
		fatal("out of memory");
	free(real);
	if (proto_origin_check(url, why, sizeof(why)) < 0)
		fatal("the default origin %.200s: %s (set origin)", url, why);
	return url;
}

static struct store *open_store(const char *url, const char *want_cluster, struct store_meta *meta)
{
	struct store *st = NULL;
	char *err = NULL;
	if (store_open(url, &st, &err) < 0)
		fatal("cannot open store: %s", err ? err : url);
	if (store_init(st, want_cluster, meta) < 0)
		fatal("store: %s", store_error(st));
	return st;
}

int primary_run(struct primary_config *cfg, const char *config_path)
{
	struct primary pr, *p = &pr;
	memset(p, 0, sizeof(*p));
	p->cfg = *cfg;
	p->config_path = config_path;
	TAILQ_INIT(&p->parked_reads);
	p->started = primary_now_ns();
	log_set_prefix("mp-primary");
	log_set_level((enum log_level)cfg->log_level);
	signal(SIGPIPE, SIG_IGN);

	if (evthread_use_pthreads() < 0)
		fatal("libevent has no pthreads support");
	p->base = event_base_new();
	if (p->base == NULL)
		fatal("cannot create the event loop");

	if (cfg->secret_file != NULL) {
		char *err = NULL;
		if (token_load_secret(cfg->secret_file, &p->secret, &p->secret_len, &err) < 0)
			fatal("secret: %s", err);
		log_info("tokens are required (secret from %s)", cfg->secret_file);
	} else {
		log_warn("no secret_file configured: every client and site is allowed without a "
		         "token (fine on one machine; configure a secret for anything else)");
	}
	if (cfg->tls_cert != NULL) {
		struct tls_config tc = {cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca,
		                        cfg->tls_verify_clients};
		char *err = NULL;
		p->tls = tls_server_ctx(&tc, &err);
		if (p->tls == NULL)
			fatal("%s", err);
	}

	if (cfg->store == NULL || cfg->store[0] == '\0') {
		int r = paths_mkdirs(cfg->data_dir);
		if (r < 0)
			fatal("cannot create data directory %s: %s", cfg->data_dir, strerror(-r));
	}
	p->origin = origin_url(cfg);
	char *url = store_url(cfg);
	if (url == NULL)
		fatal("out of memory");
	struct store_meta meta;
	struct store *writer = open_store(url, cfg->cluster_id, &meta);
	/* One primary per store. A primary that was just killed may hold the
	 * PostgreSQL lock a little longer (its session ends after it), so
	 * wait a while before giving up there. */
	for (int waited = 0;; waited++) {
		int lr = store_lock(writer);
		if (lr == 0)
			break;
		/* flock dies with its process; only a PostgreSQL session can
		 * outlive a killed primary for a moment. */
		bool may_wait = strcmp(store_kind(writer), "postgres") == 0;
		if (lr != -EBUSY || !may_wait || waited >= STORE_LOCK_WAIT_S * 10)
			fatal("store: %s", store_error(writer));
		if (waited == 0)
			log_warn("%s; waiting up to %d s for it to go away", store_error(writer),
			         STORE_LOCK_WAIT_S);
		struct timespec ts = {0, 100000000};
		nanosleep(&ts, NULL);
	}
	/* Whatever a previous holder committed while we waited is in the
	 * store now: read the meta again. */
	if (store_init(writer, meta.cluster_id, &meta) < 0)
		fatal("store: %s", store_error(writer));
	struct store_meta meta2;
	p->reader = open_store(url, meta.cluster_id, &meta2);
	p->store_kind = store_kind(writer);
	snprintf(p->cluster_id, sizeof(p->cluster_id), "%s", meta.cluster_id);

	p->ns = namespace_new();
	if (p->ns == NULL)
		fatal("out of memory");
	int64_t t0 = primary_now_ns();
	int r = store_load_nodes(writer, load_node, p->ns);
	if (r < 0)
		fatal("loading the namespace: %s", store_error(writer));
	char why[256];
	if (namespace_load_finish(p->ns, why, sizeof(why)) < 0)
		fatal("the store's namespace is broken: %s", why);
	uint8_t digest[DIGEST_LEN];
	namespace_digest(p->ns, digest);
	if (meta.version > 0 && memcmp(digest, meta.digest, DIGEST_LEN) != 0)
		fatal("the store's namespace does not match its recorded digest at version %llu: "
		      "the store was changed outside mp-primary",
		      (unsigned long long)meta.version);
	memcpy(p->digest, digest, DIGEST_LEN);
	p->version = p->mem_version = meta.version;
	p->next_ino = meta.next_ino > NODE_ROOT_INO ? meta.next_ino : NODE_ROOT_INO + 1;
	log_info("loaded %llu entries at version %llu from %s store in %.2f s",
	         (unsigned long long)namespace_count(p->ns), (unsigned long long)p->version,
	         p->store_kind, (double)(primary_now_ns() - t0) / 1e9);

	p->log = changelog_new(CHANGELOG_CACHE_ENTRIES, CHANGELOG_CACHE_BYTES);
	uint64_t oldest, newest;
	if (p->log == NULL || store_log_bounds(p->reader, &oldest, &newest) < 0)
		fatal("change log: %s", store_error(p->reader));
	changelog_set_store_oldest(p->log, oldest);
	if (newest > 0)
		store_read_changes(p->reader, newest, 1, 1, last_version_time, p);

	p->metrics = metrics_new();
	register_metrics(p);
	metric_set(p->m_version, (double)p->version);
	metric_set(p->m_entries, (double)namespace_count(p->ns));

	char *err = NULL;
	p->committer = committer_new(p, writer, &err);
	if (p->committer == NULL)
		fatal("%s", err ? err : "cannot start the committer");
	p->gc = gc_new(p, url, &err);
	if (p->gc == NULL)
		fatal("%s", err ? err : "cannot start garbage collection");
	struct stream_host shost = {
	    .owner = p,
	    .ns = &p->ns,
	    .version = &p->version,
	    .digest = p->digest,
	    .next_ino = &p->next_ino,
	    .cluster_id = p->cluster_id,
	    .log = p->log,
	    .read_log = read_log,
	    .when_idle = when_idle,
	    .heartbeat_ms = cfg->heartbeat_interval_ms,
	    .site_keep_ms = cfg->retention_max_age_ms,
	    .metrics = p->metrics,
	    .metric_prefix = "mp_primary",
	};
	p->stream = stream_new(&shost);
	p->sites = site_table_new();
	if (p->sites == NULL)
		fatal("out of memory");
	if (p->stream == NULL)
		fatal("out of memory");
	struct server_config scfg = {
	    .listen = cfg->listen,
	    .role = "primary",
	    .cluster_id = p->cluster_id,
	    .origin = p->origin,
	    .tls = p->tls,
	    .secret = p->secret,
	    .secret_len = p->secret_len,
	    .max_frame_bytes = cfg->max_frame_bytes,
	    .idle_timeout_ms = cfg->idle_timeout_ms,
	    .max_connections = cfg->max_connections,
	    .m_connections = p->m_connections,
	    .m_frames_rejected = p->m_frames_rejected,
	};
	p->server = server_new(p->base, &scfg, &primary_server_ops, p, &err);
	if (p->server == NULL)
		fatal("%s", err);
	char host[NETADDR_HOST_MAX];
	uint16_t port;
	if (netaddr_split(cfg->admin, host, sizeof(host), &port) < 0)
		fatal("admin address '%s' is not HOST:PORT", cfg->admin);
	p->admin = admin_new(p->base, host, port, &err);
	if (p->admin == NULL)
		fatal("%s", err);
	if (status_register(p) < 0)
		fatal("cannot register admin routes");

	p->sigterm_ev = evsignal_new(p->base, SIGTERM, signal_cb, p);
	p->sigint_ev = evsignal_new(p->base, SIGINT, signal_cb, p);
	p->sighup_ev = evsignal_new(p->base, SIGHUP, signal_cb, p);
	evsignal_add(p->sigterm_ev, NULL);
	evsignal_add(p->sigint_ev, NULL);
	evsignal_add(p->sighup_ev, NULL);
	p->housekeeping_ev = event_new(p->base, -1, EV_PERSIST, housekeeping_cb, p);
	struct timeval hk = {HOUSEKEEPING_MS / 1000, (HOUSEKEEPING_MS % 1000) * 1000};
	evtimer_add(p->housekeeping_ev, &hk);
	p->heartbeat_ev = event_new(p->base, -1, EV_PERSIST, heartbeat_cb, p);
	arm_heartbeat(p);
	p->drain_ev = evtimer_new(p->base, drain_cb, p);

	log_info("cluster %s: serving on %s (port %u), admin on %s (port %u), store %s%s",
	         p->cluster_id, cfg->listen, server_port(p->server), cfg->admin,
	         admin_port(p->admin), p->store_kind, p->tls ? ", TLS" : "");
	log_info("origin announced to clients: %s", p->origin);
	free(url);

	event_base_dispatch(p->base);

	log_info("stopped at version %llu", (unsigned long long)p->version);
	gc_free(p->gc);
	p->gc = NULL;
	server_free(p->server);
	committer_free(p->committer);
	struct request *rq;
	while ((rq = TAILQ_FIRST(&p->parked_reads)) != NULL) {
		TAILQ_REMOVE(&p->parked_reads, rq, entry);
		request_free(rq);
	}
	stream_free(p->stream);
	site_table_free(p->sites);
	admin_free(p->admin);
	event_free(p->sigterm_ev);
	event_free(p->sigint_ev);
	event_free(p->sighup_ev);
	event_free(p->housekeeping_ev);
	event_free(p->heartbeat_ev);
	event_free(p->drain_ev);
	changelog_free(p->log);
	store_close(p->reader);
	namespace_free(p->ns);
	metrics_free(p->metrics);
	if (p->tls)
		SSL_CTX_free(p->tls);
	if (p->secret)
		token_free_secret(p->secret, p->secret_len);
	free(p->origin);
	*cfg = p->cfg; /* reloads may have replaced it; the caller frees */
	event_base_free(p->base);
	return exit_code;
}
