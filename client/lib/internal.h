/* libmirrorplane internals: what the library's files share. Nothing here is
 * public; the public contract is client/include/mirrorplane/mirrorplane.h. */
#ifndef MP_CLIENT_INTERNAL_H
#define MP_CLIENT_INTERNAL_H

#include <msgpack.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cacheproto.h"
#include "config.h"
#include "mirrorplane/mirrorplane.h"
#include "msg.h"
#include "objstore.h"

#define BUCKETS_MAX      32
#define ALIAS_MAX        63
#define SERVERS_MAX      320 /* mirrors and primaries, then cache nodes as they appear */
#define ADDRESS_MAX      80
#define CLUSTER_MAX      80
#define ORIGIN_URL_MAX   1200
#define POOL_MAX         32 /* idle connections kept per server, object-store handles per bucket */
#define BATCH_OPS        1000
#define CLIENT_FRAME_MAX (64u << 20)
#define OBJECT_KEY_MAX   128 /* keys of objects put: prefix and 32 hex digits */

/* ---- errors.c ---- */
int mperr(mp_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A short description of a negative errno ("no such file or directory"). */
const char *mperr_name(int code);

/* ---- site_config.c ---- */
struct bucket_config {
	char *url;
	char *endpoint;
	char *region;
	char *access_key;
	char *secret_key;
	char *replica;
	bool path_style;
};

struct mp_config {
	struct config_strlist primary;
	struct config_strlist mirror;
	char *token;
	unsigned consistency; /* 0 session, 1 strong, 2 eventual */
	uint64_t max_staleness_ms;
	uint64_t connect_timeout_ms;
	uint64_t timeout_ms;
	uint64_t read_deadline_ms;
	uint64_t probe_interval_ms;
	char *session_file;
	char *origin;
	uint64_t parallel;
	uint64_t part_size;
	uint64_t object_size;
	uint64_t multipart_threshold;
	bool tls_enabled;
	char *tls_ca;
	char *tls_cert;
	char *tls_key;
	char *tls_server_name;
	size_t nbuckets;
	char *bucket_alias[BUCKETS_MAX];
	struct bucket_config buckets[BUCKETS_MAX];
	bool primary_added, mirror_added;
	/* The cache group: clients read through it when the site's mirror
	 * lists members; mp-cache nodes take their own options from cache.*. */
	bool cache_enabled;
	uint64_t hedge_delay_ms;     /* before the first latencies are known */
	uint64_t hedge_max_ms;       /* learned delays stay under this */
	uint64_t cache_hedge_ms;     /* cache reads: at least this */
	uint64_t members_refresh_ms; /* how often the member list is asked again */
	char *site;
	char *cache_listen;
	char *cache_advertise;
	char *cache_admin;
	struct config_strlist cache_dirs;
	uint64_t cache_weight;
	uint64_t cache_block_size;
	uint64_t cache_min_free_pct;
	uint64_t cache_fetch_concurrency;
	uint64_t cache_fetch_rate;
	struct config_strlist cache_parent;
	uint64_t cache_parent_timeout_ms;
	uint64_t cache_warming_ms;
	uint64_t cache_drain_ms;
	uint64_t cache_verify_ms;
	uint64_t cache_heartbeat_ms;
	uint64_t cache_serve_threads;
	char *cache_secret_file;
	uint64_t cache_max_connections;
	unsigned cache_log_level;
	struct config_option *table; /* the base options and one group per bucket alias */
};

int site_config_copy(struct mp_config *dst, const struct mp_config *src);
void site_config_release(struct mp_config *cfg);
/* The bucket's index, or -1. */
int site_config_bucket(const struct mp_config *cfg, const char *alias);
int site_config_check_alias(const char *alias, size_t len);
/* mp_config_load from memory; name stands for the file in messages. */
int site_config_load_buffer(struct mp_config *cfg, const char *name, const char *buf, size_t len,
                            mp_error *err);

/* ---- channel.c: one blocking connection to one server ---- */
struct channel {
	int fd;
	SSL *ssl; /* NULL: plain TCP */
	uint64_t next_id;
	int64_t last_used_ns;
	char address[ADDRESS_MAX];
	bool is_mirror; /* as the server says in HELLO_OK */
	char cluster_id[CLUSTER_MAX];
	char origin[ORIGIN_URL_MAX];
	char site[64];
	char upload_prefix[80]; /* where this token's uploads go ("" : mp/) */
	uint64_t hello_version;
};

/* An answer: a REPLY or an ERROR frame, decoded. */
struct reply {
	uint8_t *payload;
	size_t payload_len;
	struct frame frame;
	bool decoded;
	bool is_error;
	int error_code;        /* negative errno of an ERROR */
	const char *error_msg; /* points into payload */
	size_t error_msg_len;
	uint64_t version;
};
void reply_release(struct reply *r);

/* A request under construction: the body's key/value pairs, packed. */
struct request_body {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t type;
	uint32_t nfields;
};
void request_init(struct request_body *b, uint32_t type);
void request_destroy(struct request_body *b);
void request_key(struct request_body *b, const char *key); /* counts a field */
void request_str(struct request_body *b, const char *key, const char *value);
void request_u64(struct request_body *b, const char *key, uint64_t value);

/* Connects and says HELLO (with the token and, once known, the cluster id).
 * Errors name the address. */
struct channel_tls {
	SSL_CTX *ctx;            /* NULL: plain TCP */
	const char *server_name; /* NULL: the host part of each address */
};
int channel_open(const char *address, const struct channel_tls *tls, const char *token,
                 const char *cluster_id, uint64_t connect_timeout_ms, uint64_t timeout_ms,
                 struct channel **ret, mp_error *err);
void channel_close(struct channel *ch);
/* Whether an idle channel still looks usable (no EOF or error pending). */
bool channel_alive(struct channel *ch);
/* Sends the request with extra read fields (min_version etc. when nonzero) and
 * waits up to timeout_ms for its answer. Returns 0 with *ret filled (an ERROR
 * answer is still 0, with ret->is_error), -ETIMEDOUT, or another negative
 * errno for a broken connection (*ret_sent tells whether the request may
 * have reached the server). */
struct read_fields {
	uint64_t min_version;
	uint64_t deadline_ms;
	uint64_t max_staleness_ms;
	bool send_deadline;
};
int channel_call(struct channel *ch, const struct request_body *b, const struct read_fields *rf,
                 uint64_t timeout_ms, struct reply *ret, bool *ret_sent, mp_error *err);

/* The two halves of channel_call, for reads that race two servers: the
 * request goes out (its id in *ret_id), then its answer is read. */
int channel_send(struct channel *ch, const struct request_body *b, const struct read_fields *rf,
                 uint64_t timeout_ms, uint64_t *ret_id, mp_error *err);
int channel_receive(struct channel *ch, uint64_t id, int64_t deadline_ns, struct reply *ret,
                    mp_error *err);
/* Whether bytes are waiting (within timeout_ms). */
bool channel_readable(struct channel *ch, int timeout_ms);
int channel_fd(const struct channel *ch);

/* ---- servers.c: the ordered server lists, pools, mark-down and probing ---- */
struct server_entry {
	char address[ADDRESS_MAX];
	bool is_primary;
	bool is_cache; /* a cache node: never asked for metadata */
	bool is_aside; /* a parent site's mirror: asked for its group only */
	pthread_mutex_t lock;
	struct channel *idle[POOL_MAX];
	int nidle;
	bool down;
	int64_t next_probe_ns;
	uint64_t need_version;      /* to come back: applied at least this */
	uint64_t need_staleness_ms; /* and no staler than this (0: any) */
	int64_t latency_ns;         /* moving average of answered calls; 0: none yet */
	int beaten;                 /* hedges lost in a row */
	char why_down[MP_ERROR_MAX];
};

struct servers {
	struct server_entry *entries[SERVERS_MAX];
	size_t n; /* grows (under lock) as cache nodes appear; read with acquire */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t prober;
	bool prober_running;
	bool stopping;
};

/* ---- cachegroup.c ---- */
struct cachegroup {
	pthread_mutex_t lock;
	pthread_cond_t cond;                 /* a refresh finished */
	const struct config_strlist *source; /* who lists the members; NULL: the site's mirrors */
	const char *self; /* a member to leave out (a cache node's own address) */
	struct server_entry *nodes[CACHE_MEMBERS_MAX];
	uint64_t ids[CACHE_MEMBERS_MAX], weights[CACHE_MEMBERS_MAX];
	size_t n;
	uint64_t block_size;
	uint64_t timeout_ms; /* per block read; 0: the handle's timeout */
	int64_t refreshed_ns;
	bool known, refreshing;
};

/* ---- buckets.c ---- */
struct bucket {
	char alias[ALIAS_MAX + 1];
	int config_index; /* -1: the origin with no configuration */
	pthread_mutex_t lock;
	struct objstore *idle[POOL_MAX];
	int nidle;
};

/* ---- the handle ---- */
struct mp_client {
	struct mp_config cfg;
	enum mp_consistency consistency;
	uint64_t max_staleness_ms;
	_Atomic uint64_t session;
	uint64_t session_saved;
	pthread_mutex_t lock; /* cluster_id, origin, session file */
	char cluster_id[CLUSTER_MAX];
	char origin_url[ORIGIN_URL_MAX];
	char upload_prefix[80]; /* as the primary announced for our token */
	bool session_loaded;
	struct servers servers;
	struct channel_tls tls;
	struct bucket buckets[BUCKETS_MAX + 1];
	size_t nbuckets;
	struct cachegroup group; /* the site's cache group */
	/* Hedge legs still running on their own threads. */
	pthread_mutex_t legs_lock;
	pthread_cond_t legs_cond;
	int legs_running;
	bool orphaned;
};

int servers_init(struct mp_client *c);
void servers_destroy(struct mp_client *c);
/* A channel to s: pooled or new. */
int servers_get_channel(struct mp_client *c, struct server_entry *s, struct channel **ret,
                        bool *ret_pooled, mp_error *err);
void servers_put_channel(struct server_entry *s, struct channel *ch);
/* A pooled channel that still looks alive, or NULL (no connect). */
struct channel *servers_take_pooled(struct server_entry *s);
void servers_note_latency(struct server_entry *s, int64_t ns);
void servers_mark_down(struct mp_client *c, struct server_entry *s, uint64_t need_version,
                       uint64_t need_staleness_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
bool servers_is_down(struct server_entry *s);
/* Whether metadata reads and writes may be routed to s. */
static inline bool servers_routable(const struct server_entry *s)
{
	return !s->is_cache && !s->is_aside;
}
struct server_entry *servers_entry_new(const char *address, bool is_primary);
/* The entry for address among the handle's servers, added (as a mirror
 * that reads never go to) if it is not there. NULL when full. */
struct server_entry *servers_find_or_add(struct mp_client *c, const char *address);

void cachegroup_init(struct cachegroup *g, const struct config_strlist *source);
void cachegroup_destroy(struct cachegroup *g);
/* Replaces the members (skipping self, which may be NULL). */
void cachegroup_set(struct mp_client *c, struct cachegroup *g, const struct cache_member *m,
                    size_t n, const char *self);
/* The group's block size, or 0 when there is no group (or the handle does
 * not use one); refreshes the member list when due. */
uint64_t cachegroup_block_size(struct mp_client *c, struct cachegroup *g);
/* Reads req (within one block) at the owner, then the next nodes in HRW
 * order, at most max_nodes of them; the req->length bytes go to sink.
 * Returns 0, -ENODATA when no node served (go to the buckets), -EACCES, or
 * the sink's error. */
int cachegroup_read(struct mp_client *c, struct cachegroup *g, const struct block_request *req,
                    size_t max_nodes, mp_sink_cb sink, void *arg, mp_call *call, mp_error *err);
/* A peer read (no fill) at the group's draining nodes (weight 0): how a
 * leaving node hands its blocks to their new owners. 0 or -ENODATA. */
int cachegroup_read_draining(struct mp_client *c, struct cachegroup *g,
                             const struct block_request *req, mp_sink_cb sink, void *arg);
/* A sink that copies into a buffer (struct cachegroup_buf). */
struct cachegroup_buf {
	uint8_t *p;
	size_t len, cap;
};
int cachegroup_buf_sink(void *arg, const void *data, size_t len);

/* ---- route.c: routing, fallback and hedging ---- */
enum attempt { ATTEMPT_ANSWERED, ATTEMPT_FAILED, ATTEMPT_UNKNOWN };
/* One request at one server (one retry on a fresh connection when a pooled
 * one was dead). */
enum attempt route_once(struct mp_client *c, struct server_entry *s, const struct request_body *b,
                        const struct read_fields *rf, uint64_t timeout_ms, struct reply *ret,
                        mp_error *err);
/* Sends b to each routable mirror in turn until take accepts an answer:
 * take gets the server's address and the reply (an ERROR reply too; the
 * reply is released after take) and returns 0 to stop or a negative errno
 * (with err set) to try the next mirror. Returns 0, or the last failure
 * (none_why when no mirror is configured). For what only mirrors know. */
int route_first_mirror(struct mp_client *c, const struct request_body *b,
                       int (*take)(void *arg, const char *address, const struct reply *rep,
                                   mp_error *err),
                       void *arg, const char *none_why, mp_error *err);
/* A read at s, hedged to backup (NULL: none) after s's hedge delay; the
 * first answer wins and *ret_served says whose it is. A server beaten by
 * its backup is marked down. */
enum attempt route_hedged(struct mp_client *c, struct server_entry *s, const struct read_fields *rf,
                          struct server_entry *backup, const struct read_fields *rf_backup,
                          const struct request_body *b, uint64_t timeout_ms, struct reply *ret,
                          struct server_entry **ret_served, mp_error *err);
/* At mp_client_close: true when no hedge leg runs; otherwise the handle is
 * marked orphaned and the last leg frees it (client_destroy). */
bool route_quiesce(struct mp_client *c);
void client_destroy(struct mp_client *c);

/* ---- client.c: the handle ---- */
void client_learn(struct mp_client *c, const struct channel *ch);
void client_session_bump(struct mp_client *c, uint64_t version);
enum mp_consistency client_level(const struct mp_client *c, const mp_call *call);
/* A read: at the mirrors in order (with the call's consistency), then the
 * primaries. */
int client_read(struct mp_client *c, const struct request_body *b, mp_call *call, struct reply *ret,
                mp_error *err);
/* A write (or a read that must be at the primary): at the first primary that
 * answers. An ERROR answer is returned as its errno with its message. */
int client_primary(struct mp_client *c, const struct request_body *b, mp_call *call,
                   struct reply *ret, mp_error *err);
/* A VERSION at a primary: what its HELLO_OK says (origin, upload prefix)
 * is learnt on the way. */
int client_ask_primary(struct mp_client *c, mp_error *err);
/* Turns an ERROR answer into (code, message) in err. */
int client_answer_error(const struct reply *r, const char *what, mp_error *err);
/* The origin URL the primary announced ("" if none yet): asks a primary if
 * none is known. */
int client_origin_url(struct mp_client *c, char *out, size_t outlen, mp_error *err);
/* Sets the origin's URL (for a handle inside a daemon that learned it from
 * its own upstream rather than from a HELLO of the handle's). */
void client_set_origin_url(struct mp_client *c, const char *url);

/* ---- session.c ---- */
void session_load(struct mp_client *c); /* under c->lock, once the cluster id is known */
int session_save(struct mp_client *c, mp_error *err);

/* ---- nodes.c ---- */
/* Decodes the node field of a REPLY into an mp_node (malloc'd strings). */
int nodes_from_msg(const msgpack_object *o, mp_node *ret, mp_error *err);
int nodes_from_reply(const struct reply *r, mp_node *ret, mp_error *err);
/* Encodes a layout of extents as the msgpack array the protocol wants. */
void nodes_pack_layout(msgpack_packer *pk, const mp_extent *ext, size_t n);
/* Checks an absolute remote path the way the server will. */
int nodes_check_path(const char *path, mp_error *err);
/* A BATCH of ops [type, {body}] sent to the primary. */
struct batch {
	msgpack_sbuffer sb; /* the ops, packed */
	msgpack_packer pk;
	uint32_t nops;
};
void batch_init(struct batch *b);
void batch_destroy(struct batch *b);
int batch_flush(struct mp_client *c, struct batch *b, mp_call *call, mp_error *err);

/* ---- buckets.c ---- */
int buckets_init(struct mp_client *c, mp_error *err);
void buckets_destroy(struct mp_client *c);
/* An object-store handle for alias (its own or the site replica's when
 * replica is true and one is configured; *ret_st NULL then means none). */
int buckets_acquire(struct mp_client *c, const char *alias, bool replica, struct bucket **ret_b,
                    struct objstore **ret_st, mp_error *err);
void buckets_release(struct bucket *b, struct objstore *st);
int buckets_error(mp_error *err, int rc, const struct objstore_error *oe);

/* ---- progress (transfer.c) ---- */
struct progress {
	pthread_mutex_t lock;
	mp_progress p;
	mp_progress_cb cb;
	void *arg;
	int64_t last_ns;
};
void progress_init(struct progress *pr, const mp_transfer_opts *opts);
void progress_add(struct progress *pr, uint64_t bytes, uint64_t files, const char *current);
void progress_totals(struct progress *pr, uint64_t bytes, uint64_t files);
void progress_finish(struct progress *pr);
void progress_destroy(struct progress *pr);

int transfer_parallel(const struct mp_client *c, const mp_transfer_opts *opts);
/* Uploads data as a new origin object and commits the file at remote. */
int transfer_put_data(struct mp_client *c, const void *data, size_t len, const char *remote,
                      uint32_t mode, int64_t mtime_ns, struct progress *pr, mp_call *call,
                      mp_error *err);
/* Downloads node's extents into fd (pwrite at file offsets). */
int transfer_get_fd(struct mp_client *c, const mp_node *n, int fd, int parallel,
                    struct progress *pr, mp_error *err);

int64_t client_now_ns(void);

#endif
