/* A cache node's life: the store, the fetchers, the block server, the
 * registrar, the admin endpoints; SIGTERM drains (weight 0, so clients move
 * to the next owners, then exits once connections are gone or after a grace
 * period); SIGHUP reloads what can change while running. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "cachenode.h"
#include "json.h"
#include "log.h"
#include "netaddr.h"
#include "token.h"
#include "units.h"

#define DRAIN_GRACE_NS (5ll * 1000000000)

static int exit_code;
static int64_t drain_started;

int64_t cachenode_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t server_version(void *owner)
{
	return 0;
}

static const struct server_ops ops = {
    .dispatch = serve_dispatch,
    .version = server_version,
};

/* ---- admin ---- */

static void update_gauges(struct cachenode *n)
{
	struct blockstore_stats st;
	blockstore_stats(n->store, &st);
	metric_set(n->m_blocks, (double)st.blocks);
	metric_set(n->m_fills_active, (double)atomic_load(&n->fills_active));
	double ev = metric_value(n->m_evictions), co = metric_value(n->m_corrupt);
	if ((double)st.evictions > ev)
		metric_add(n->m_evictions, (double)st.evictions - ev);
	if ((double)st.corrupt > co)
		metric_add(n->m_corrupt, (double)st.corrupt - co);
	struct blockstore_dir_stats ds[BLOCKSTORE_DIRS_MAX];
	size_t nd = blockstore_dir_stats(n->store, ds, BLOCKSTORE_DIRS_MAX);
	for (size_t i = 0; i < nd; i++) {
		metric_set(metric_child(n->m_used, ds[i].path), (double)ds[i].used);
		metric_set(metric_child(n->m_capacity, ds[i].path), (double)ds[i].capacity);
		metric_set(metric_child(n->m_dir_failed, ds[i].path), ds[i].failed ? 1 : 0);
	}
}

static int metrics(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct cachenode *n = arg;
	update_gauges(n);
	return metrics_handler(n->metrics, body, ret_content_type);
}

static int healthz(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct cachenode *n = arg;
	struct blockstore_stats st;
	blockstore_stats(n->store, &st);
	*ret_content_type = ADMIN_TEXT_CONTENT_TYPE;
	if (n->draining) {
		evbuffer_add_printf(body, "draining\n");
		return 503;
	}
	if (st.dirs_failed == st.dirs) {
		evbuffer_add_printf(body, "every cache dir is out of service\n");
		return 503;
	}
	evbuffer_add_printf(body, "ok\n");
	return 200;
}

static int status(void *arg, struct evbuffer *body, const char **ret_content_type)
{
	struct cachenode *n = arg;
	struct blockstore_stats st;
	blockstore_stats(n->store, &st);
	struct json_writer w;
	json_init(&w, body);
	json_begin_object(&w);
	json_key(&w, "role");
	json_string(&w, "cache");
	json_key(&w, "site");
	json_string(&w, n->cfg->site ? n->cfg->site : "");
	json_key(&w, "address");
	json_string(&w, n->address);
	json_key(&w, "state");
	json_string(&w, n->draining ? "draining" : cacheproto_state_name(register_state(n)));
	json_key(&w, "weight");
	json_uint(&w, atomic_load(&n->weight));
	json_key(&w, "block_size");
	json_uint(&w, n->block_size);
	json_key(&w, "blocks");
	json_uint(&w, st.blocks);
	json_key(&w, "used");
	json_uint(&w, st.used);
	json_key(&w, "capacity");
	json_uint(&w, st.capacity);
	uint64_t hits = atomic_load(&n->hits), misses = atomic_load(&n->misses);
	json_key(&w, "hits");
	json_uint(&w, hits);
	json_key(&w, "misses");
	json_uint(&w, misses);
	json_key(&w, "hit_ratio");
	json_double(&w, hits + misses ? (double)hits / (double)(hits + misses) : 0);
	json_key(&w, "evictions");
	json_uint(&w, st.evictions);
	json_key(&w, "corrupt_blocks");
	json_uint(&w, st.corrupt);
	json_key(&w, "fills_active");
	json_uint(&w, atomic_load(&n->fills_active));
	json_key(&w, "connections");
	json_uint(&w, cachenode_connections(n));
	json_key(&w, "serve_loops");
	json_uint(&w, n->nloops);
	pthread_mutex_lock(&n->reg_lock);
	json_key(&w, "registered");
	json_bool(&w, n->registered);
	json_key(&w, "registration_error");
	json_string(&w, n->reg_error);
	pthread_mutex_unlock(&n->reg_lock);
	json_key(&w, "peers");
	pthread_mutex_lock(&n->own.lock);
	json_begin_array(&w);
	for (size_t i = 0; i < n->own.n; i++)
		json_string(&w, n->own.nodes[i]->address);
	json_end_array(&w);
	pthread_mutex_unlock(&n->own.lock);
	json_key(&w, "dirs");
	json_begin_array(&w);
	struct blockstore_dir_stats ds[BLOCKSTORE_DIRS_MAX];
	size_t nd = blockstore_dir_stats(n->store, ds, BLOCKSTORE_DIRS_MAX);
	for (size_t i = 0; i < nd; i++) {
		json_begin_object(&w);
		json_key(&w, "path");
		json_string(&w, ds[i].path);
		json_key(&w, "used");
		json_uint(&w, ds[i].used);
		json_key(&w, "capacity");
		json_uint(&w, ds[i].capacity);
		json_key(&w, "blocks");
		json_uint(&w, ds[i].blocks);
		json_key(&w, "state");
		json_string(&w, ds[i].failed ? "failed" : "ok");
		if (ds[i].failed) {
			json_key(&w, "error");
			json_string(&w, ds[i].why);
		}
		json_end_object(&w);
	}
	json_end_array(&w);
	json_end_object(&w);
	evbuffer_add(body, "\n", 1);
	*ret_content_type = JSON_CONTENT_TYPE;
	return 200;
}

static int metrics_init(struct cachenode *n)
{
	struct metrics *m = n->metrics = metrics_new();
	if (m == NULL)
		return -ENOMEM;
	static const double fill_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
	                                     0.25,  0.5,   1,    2.5,   5,    10};
	n->m_requests = metrics_counter(m, "mp_cache_requests_total", "Block reads received");
	n->m_hits = metrics_counter(m, "mp_cache_hits_total", "Block reads served from disk");
	n->m_misses = metrics_counter(m, "mp_cache_misses_total", "Block reads that needed a fill");
	n->m_bytes_hit =
	    metrics_counter(m, "mp_cache_hit_bytes_total", "Bytes served from cached blocks");
	n->m_bytes_filled =
	    metrics_counter(m, "mp_cache_filled_bytes_total", "Bytes of blocks filled on a miss");
	n->m_fetched = metrics_labeled(m, "mp_cache_fetched_bytes_total",
	                               "Bytes fetched, by source (peer, parent, replica, bucket)",
	                               METRIC_COUNTER, "source");
	n->m_fill_seconds =
	    metrics_histogram(m, "mp_cache_fill_seconds", "Time from a miss to its block stored",
	                      fill_bounds, sizeof(fill_bounds) / sizeof(fill_bounds[0]));
	n->m_waits = metrics_counter(m, "mp_cache_singleflight_waits_total",
	                             "Misses that joined a fill already in flight");
	n->m_errors = metrics_counter(m, "mp_cache_errors_total",
	                              "Reads answered with an error (bad requests, failed fills)");
	n->m_peer_misses =
	    metrics_counter(m, "mp_cache_peer_misses_total", "Peer reads of blocks not held here");
	n->m_evictions = metrics_counter(m, "mp_cache_evictions_total", "Blocks evicted");
	n->m_denied = metrics_counter(m, "mp_cache_denied_total",
	                              "Reads refused for a missing, forged or expired grant");
	n->m_warm_blocks = metrics_labeled(m, "mp_cache_warm_blocks_total",
	                                   "Blocks asked for by CACHE_WARM, by result (cached, "
	                                   "filled, failed)",
	                                   METRIC_COUNTER, "result");
	n->m_warm_evicted = metrics_counter(m, "mp_cache_warm_evicted_blocks_total",
	                                    "Blocks dropped by CACHE_EVICT");
	n->m_corrupt = metrics_counter(m, "mp_cache_corrupt_blocks_total",
	                               "Blocks found corrupt, truncated or missing, and dropped");
	n->m_blocks = metrics_gauge(m, "mp_cache_blocks", "Blocks cached");
	n->m_fills_active = metrics_gauge(m, "mp_cache_fills_active", "Fetches in progress");
	n->m_used = metrics_labeled(m, "mp_cache_dir_used_bytes", "Bytes cached per dir",
	                            METRIC_GAUGE, "dir");
	n->m_capacity = metrics_labeled(m, "mp_cache_dir_capacity_bytes", "Capacity per dir",
	                                METRIC_GAUGE, "dir");
	n->m_dir_failed =
	    metrics_labeled(m, "mp_cache_dir_failed",
	                    "1 when a dir is out of service (EIO, ENOSPC)", METRIC_GAUGE, "dir");
	if (!n->m_requests || !n->m_hits || !n->m_misses || !n->m_bytes_hit || !n->m_bytes_filled ||
	    !n->m_fetched || !n->m_fill_seconds || !n->m_waits || !n->m_errors ||
	    !n->m_peer_misses || !n->m_evictions || !n->m_corrupt || !n->m_blocks ||
	    !n->m_fills_active || !n->m_used || !n->m_capacity || !n->m_dir_failed)
		return -ENOMEM;
	return 0;
}

/* ---- serving loops ---- */

size_t cachenode_connections(struct cachenode *n)
{
	size_t total = 0;
	for (size_t i = 0; i < n->nloops; i++)
		total += server_connections(n->loops[i].server);
	return total;
}

static void stop_listening_cb(evutil_socket_t fd, short what, void *arg)
{
	server_stop_listening(arg);
}

/* Each loop stops accepting, on its own thread. */
static void stop_listening(struct cachenode *n)
{
	server_stop_listening(n->loops[0].server);
	for (size_t i = 1; i < n->nloops; i++)
		event_base_once(n->loops[i].base, -1, EV_TIMEOUT, stop_listening_cb,
		                n->loops[i].server, NULL);
}

static void *loop_main(void *arg)
{
	struct serve_loop *l = arg;
	event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void start_loops(struct cachenode *n)
{
	struct server_config sc = {
	    .listen = n->cfg->cache_listen,
	    .role = "cache",
	    .cluster_id = n->cluster_id,
	    .origin = "",
	    .site = n->cfg->site,
	    .secret = n->secret,
	    .secret_len = n->secret_len,
	    .max_frame_bytes = 1 << 20,
	    .idle_timeout_ms = 300000,
	    .max_connections = n->cfg->cache_max_connections,
	    .reuse_port = n->cfg->cache_serve_threads > 1,
	};
	char *why = NULL;
	char listen[NETADDR_HOST_MAX + 8];
	n->nloops = n->cfg->cache_serve_threads;
	if (n->nloops > SERVE_LOOPS_MAX)
		n->nloops = SERVE_LOOPS_MAX;
	for (size_t i = 0; i < n->nloops; i++) {
		struct serve_loop *l = &n->loops[i];
		l->node = n;
		l->base = i == 0 ? n->base : event_base_new();
		if (l->base == NULL)
			fatal("libevent: cannot make an event base");
		l->server = server_new(l->base, &sc, &ops, l, &why);
		if (l->server == NULL)
			fatal("%s", why);
		if (i == 0) {
			/* Port 0: the others listen where the first got. */
			char host[NETADDR_HOST_MAX];
			uint16_t port;
			if (netaddr_split(n->cfg->cache_listen, host, sizeof(host), &port) == 0 &&
			    port == 0) {
				snprintf(listen, sizeof(listen), "%.60s:%u", host,
				         server_port(l->server));
				sc.listen = listen;
				if (strcmp(n->address, n->cfg->cache_listen) == 0)
					snprintf(n->address, sizeof(n->address), "%.70s", listen);
			}
			continue;
		}
		if (pthread_create(&l->thread, NULL, loop_main, l) != 0)
			fatal("cannot start serving thread %zu", i);
		l->running = true;
	}
}

static void stop_loops(struct cachenode *n)
{
	for (size_t i = 1; i < n->nloops; i++)
		if (n->loops[i].running) {
			event_base_loopexit(n->loops[i].base, NULL);
			pthread_join(n->loops[i].thread, NULL);
		}
}

static void free_loops(struct cachenode *n)
{
	for (size_t i = 0; i < n->nloops; i++) {
		server_free(n->loops[i].server);
		if (i > 0)
			event_base_free(n->loops[i].base);
	}
}

/* ---- signals ---- */

/* A draining node stays for cache.drain_period (clients learn the new
 * member list and the new owners pull its blocks as peer reads), then stops
 * listening and leaves once its connections are gone, or after a grace. */
static void drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct cachenode *n = arg;
	int64_t since = cachenode_now_ns() - drain_started;
	int64_t period = (int64_t)n->cfg->cache_drain_ms * 1000000;
	if (since >= period) {
		stop_listening(n);
		if (cachenode_connections(n) == 0 || since > period + DRAIN_GRACE_NS) {
			event_base_loopexit(n->base, NULL);
			return;
		}
	}
	struct timeval tv = {0, 100000};
	evtimer_add(n->drain_ev, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct cachenode *n = arg;
	if (sig == SIGHUP) {
		if (n->config_path == NULL) {
			log_info("SIGHUP: no configuration file (-c) to reload");
			return;
		}
		mp_config *next = NULL;
		mp_error err;
		if (mp_config_new(&next, &err) < 0 ||
		    mp_config_load(next, n->config_path, &err) < 0) {
			log_error("reload failed, keeping the running configuration: %s",
			          err.message);
			mp_config_free(next);
			return;
		}
		n->cfg->cache_fetch_rate = next->cache_fetch_rate;
		atomic_store(&n->weight, next->cache_weight);
		log_set_level((enum log_level)next->cache_log_level);
		mp_config_free(next);
		register_now(n);
		log_info("configuration reloaded from %s (weight %llu; addresses, dirs and block "
		         "size need a restart)",
		         n->config_path, (unsigned long long)atomic_load(&n->weight));
		return;
	}
	if (n->draining) {
		exit_code = 1;
		event_base_loopexit(n->base, NULL);
		return;
	}
	log_info("%s: draining: weight 0 for %.1f s, serving the blocks' new owners as they ask, "
	         "then exiting",
	         sig == SIGTERM ? "SIGTERM" : "SIGINT", (double)n->cfg->cache_drain_ms / 1000);
	n->draining = true;
	atomic_store(&n->weight, 0);
	register_now(n);
	drain_started = cachenode_now_ns();
	n->drain_ev = evtimer_new(n->base, drain_check, n);
	struct timeval tv = {0, 100000};
	evtimer_add(n->drain_ev, &tv);
}

int cachenode_parse_dir(const char *item, char **ret_path, uint64_t *ret_size, char **why)
{
	const char *colon = strrchr(item, ':');
	uint64_t size = 0;
	if (colon != NULL && (units_parse_size(colon + 1, &size) < 0 || size < CACHE_DIR_MIN_BYTES))
		return asprintf(
		           why,
		           "cache dir '%s': the size after ':' is not a size of at least 16MiB "
		           "(say 10GiB)",
		           item) < 0
		           ? -ENOMEM
		           : -EINVAL;
	if ((colon ? colon : item + strlen(item)) == item)
		return asprintf(why, "cache dir '%s': no directory before the size", item) < 0
		           ? -ENOMEM
		           : -EINVAL;
	*ret_path = colon ? strndup(item, (size_t)(colon - item)) : strdup(item);
	*ret_size = size;
	return *ret_path ? 0 : -ENOMEM;
}

static int open_store(struct cachenode *n, char **why)
{
	struct blockstore_dir_config dirs[BLOCKSTORE_DIRS_MAX];
	char *paths[BLOCKSTORE_DIRS_MAX] = {0};
	size_t nd = n->cfg->cache_dirs.n;
	int r = 0;
	for (size_t i = 0; i < nd && i < BLOCKSTORE_DIRS_MAX && r == 0; i++) {
		uint64_t size;
		r = cachenode_parse_dir(n->cfg->cache_dirs.items[i], &paths[i], &size, why);
		dirs[i] = (struct blockstore_dir_config){paths[i], size};
	}
	if (r == 0)
		r = blockstore_open(dirs, nd, (unsigned)n->cfg->cache_min_free_pct, &n->store, why);
	for (size_t i = 0; i < BLOCKSTORE_DIRS_MAX; i++)
		free(paths[i]);
	return r;
}

int cachenode_run(struct cachenode *n)
{
	if (evthread_use_pthreads() < 0)
		fatal("libevent: no thread support");
	signal(SIGPIPE, SIG_IGN);
	log_set_level((enum log_level)n->cfg->cache_log_level);
	char *why = NULL;
	mp_error err;
	n->started_ns = cachenode_now_ns();
	n->block_size = n->cfg->cache_block_size;
	atomic_store(&n->weight, n->cfg->cache_weight);
	snprintf(n->address, sizeof(n->address), "%s",
	         n->cfg->cache_advertise ? n->cfg->cache_advertise : n->cfg->cache_listen);
	int64_t t0 = cachenode_now_ns();
	if (open_store(n, &why) < 0)
		fatal("%s", why ? why : "cannot open the cache dirs");
	blockstore_set_verify_interval(n->store, n->cfg->cache_verify_ms);
	struct blockstore_stats st;
	blockstore_stats(n->store, &st);
	log_info("index rebuilt: %llu blocks, %llu of %llu bytes, in %.3f s",
	         (unsigned long long)st.blocks, (unsigned long long)st.used,
	         (unsigned long long)st.capacity, (double)(cachenode_now_ns() - t0) / 1e9);
	if (n->cfg->cache_secret_file != NULL &&
	    token_load_secret(n->cfg->cache_secret_file, &n->secret, &n->secret_len, &why) < 0)
		fatal("%s", why);
	if (mp_client_open(n->cfg, &n->client, &err) < 0)
		fatal("%s", err.message);
	cachegroup_init(&n->own, NULL);
	n->own.self = n->address;
	cachegroup_init(&n->parent, &n->client->cfg.cache_parent);
	/* The parent's owner may have to fill the block from the origin first,
	 * behind its other fills: a slow answer is not a dead node. */
	n->parent.timeout_ms = n->cfg->cache_parent_timeout_ms;
	if (metrics_init(n) < 0)
		fatal("out of memory");
	n->base = event_base_new();
	if (n->base == NULL)
		fatal("libevent: cannot make an event base");
	if (fill_start(n) < 0)
		fatal("cannot start the fetchers");
	start_loops(n);
	char host[NETADDR_HOST_MAX];
	uint16_t port;
	if (netaddr_split(n->cfg->cache_admin, host, sizeof(host), &port) < 0)
		fatal("cache.admin '%s': expected HOST:PORT", n->cfg->cache_admin);
	n->admin = admin_new(n->base, host, port, &why);
	if (n->admin == NULL)
		fatal("%s", why);
	if (admin_route(n->admin, "/healthz", healthz, n) < 0 ||
	    admin_route(n->admin, "/status", status, n) < 0 ||
	    admin_route(n->admin, "/metrics", metrics, n) < 0)
		fatal("out of memory");
	if (register_start(n) < 0)
		fatal("cannot start the registrar");
	n->sigterm_ev = evsignal_new(n->base, SIGTERM, signal_cb, n);
	n->sigint_ev = evsignal_new(n->base, SIGINT, signal_cb, n);
	n->sighup_ev = evsignal_new(n->base, SIGHUP, signal_cb, n);
	evsignal_add(n->sigterm_ev, NULL);
	evsignal_add(n->sigint_ev, NULL);
	evsignal_add(n->sighup_ev, NULL);
	log_info("mp-cache %s of site %s listening on %s (admin %s, %zu serving loops), block "
	         "size %llu, %llu fetchers",
	         n->address, n->cfg->site ? n->cfg->site : "-", n->cfg->cache_listen,
	         n->cfg->cache_admin, n->nloops, (unsigned long long)n->block_size,
	         (unsigned long long)n->nfetchers);

	event_base_dispatch(n->base);

	log_info("stopping");
	stop_loops(n);
	register_stop(n);
	fill_stop(n);
	free_loops(n);
	admin_free(n->admin);
	event_free(n->sigterm_ev);
	event_free(n->sigint_ev);
	event_free(n->sighup_ev);
	if (n->drain_ev != NULL)
		event_free(n->drain_ev);
	cachegroup_destroy(&n->own);
	cachegroup_destroy(&n->parent);
	mp_client_close(n->client);
	blockstore_free(n->store);
	metrics_free(n->metrics);
	free(n->secret);
	event_base_free(n->base);
	return exit_code;
}
