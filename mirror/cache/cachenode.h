/* mp-cache: one node of a site's cache group.
 *   main.c       command line; the configuration is the site configuration
 *                clients use (client/lib/site_config.c), cache.* options
 *   cachenode.c  life cycle, signals, admin endpoints, metrics
 *   serve.c      BLOCK_READ: hits sent with sendfile, misses handed to fill
 *   fill.c       the miss path: single flight per block, a pool of fetchers
 *                (own group while warming, parent group, site replica,
 *                the alias's bucket), verification, the store
 *   register.c   registration with the site's mirrors and the member list
 *   blockstore.c blocks on disk, the index, S3-FIFO eviction
 * Serving runs on one event loop; fetches run on their own threads. */
#ifndef MP_CACHENODE_H
#define MP_CACHENODE_H

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "blockstore.h"
#include "cacheproto.h"
#include "internal.h"
#include "proto.h"
#include "metrics.h"
#include "server.h"

struct fill;
TAILQ_HEAD(fill_list, fill);

#define SERVE_LOOPS_MAX 64

/* One event loop serving block reads: loop 0 runs on the main thread (with
 * the admin endpoints, signals and timers), the others on their own; each
 * listens at the same address (SO_REUSEPORT) and owns its connections. */
struct serve_loop {
	struct cachenode *node;
	struct event_base *base;
	struct server *server;
	pthread_t thread;
	bool running;
};

struct cachenode {
	struct event_base *base;
	struct mp_config *cfg; /* the site configuration, cache.* included */
	const char *config_path;
	struct mp_client *client; /* buckets, and the parent and own groups' nodes */
	struct blockstore *store;
	struct serve_loop loops[SERVE_LOOPS_MAX];
	size_t nloops;
	struct admin *admin;
	char address[CACHE_ADDRESS_MAX + 1]; /* as registered */
	uint64_t block_size;
	_Atomic uint64_t weight;
	int64_t started_ns;
	bool draining;
	uint8_t *secret;
	size_t secret_len;

	/* Fills in flight, by block (under queue_lock). */
	struct fill **inflight;
	/* The fetchers. */
	pthread_t *fetchers;
	size_t nfetchers;
	pthread_mutex_t queue_lock;
	pthread_cond_t queue_cond;
	struct fill_list queue; /* waiting for a fetcher */
	bool stopping;
	int64_t next_fetch_ns; /* fetch_rate pacing, under queue_lock */
	pthread_mutex_t pool_lock;
	void *pool[64]; /* free block buffers (fill.c keeps at most 64) */
	size_t npool;

	/* Registration. */
	pthread_t registrar;
	bool registrar_running;
	pthread_mutex_t reg_lock;
	pthread_cond_t reg_cond;
	struct cachegroup own;    /* this site's group, without this node */
	struct cachegroup parent; /* the parent site's group */
	bool registered;
	bool reg_stopping;
	char reg_error[600];
	char cluster_id[CLUSTER_ID_MAX + 1]; /* learnt from the mirrors; event loop only */

	struct event *sigterm_ev, *sigint_ev, *sighup_ev, *drain_ev;
	struct metrics *metrics;
	struct metric *m_requests, *m_hits, *m_misses, *m_bytes_hit, *m_bytes_filled, *m_fetched,
	    *m_fill_seconds, *m_waits, *m_errors, *m_evictions, *m_corrupt, *m_used, *m_capacity,
	    *m_dir_failed, *m_blocks, *m_fills_active, *m_peer_misses, *m_denied;
	struct metric *m_warm_blocks, *m_warm_evicted; /* warm.c */
	_Atomic uint64_t hits, misses, fills_active;
};

#define CACHE_DIR_MIN_BYTES (16u << 20)

int64_t cachenode_now_ns(void);
/* A cache dir spec "DIR[:SIZE]": the path (malloc'd) and size (0: the
 * file system's). Errors name the spec. */
int cachenode_parse_dir(const char *item, char **ret_path, uint64_t *ret_size, char **why);
int cachenode_run(struct cachenode *n);

/* Connections open over every loop. */
size_t cachenode_connections(struct cachenode *n);

/* serve.c */
void serve_dispatch(void *owner, struct conn *c, struct request *r);
/* Answers a read from the store; false when the block is not (or no
 * longer) there. On c's loop. */
bool serve_from_store(struct cachenode *n, struct conn *c, uint64_t id,
                      const struct block_request *req, const char *source);
/* Answers a read from a block's bytes in memory (block_off: the object
 * offset of data[0]); release(arg) runs once they are sent. */
void serve_from_memory(struct conn *c, uint64_t id, const struct block_request *req,
                       const char *source, const uint8_t *data, uint64_t block_off,
                       void (*release)(void *arg), void *arg);

/* fill.c */
int fill_start(struct cachenode *n);
void fill_stop(struct cachenode *n);
/* Queues a miss (or joins the fill in flight for its block); the answer
 * is sent on base, c's loop. */
void fill_request(struct cachenode *n, struct event_base *base, struct conn *c, uint64_t id,
                  const struct block_request *req, struct block_id bid);
/* Fills a block for no reader (a warm), through the same single flight;
 * done(arg, result, why) runs on base: 0 when it turned out cached, 1 when
 * filled, a negative errno when the fill failed. */
void fill_warm(struct cachenode *n, struct event_base *base, const struct block_request *req,
               struct block_id bid, void (*done)(void *arg, int result, const char *why),
               void *arg);

/* warm.c: CACHE_WARM, CACHE_EVICT and CACHE_HAS. */
void warm_dispatch(struct serve_loop *l, struct conn *c, struct request *r);

/* register.c */
int register_start(struct cachenode *n);
void register_stop(struct cachenode *n);
enum cache_state register_state(struct cachenode *n);
void register_now(struct cachenode *n);

#endif
