/* mp-primary's shared state and the interfaces between its parts:
 *   main.c       command line, config table, token subcommand
 *   primary.c    start-up, signals, housekeeping, reload, shutdown
 *   conn.c       client connections: framing, hello/auth, dispatch, teardown
 *   rpc.c        read requests and the execution of write requests
 *   committer.c  group commit: queued writes -> versions -> store thread
 *   changelog.c  the in-memory tail of the change log and retention
 *   stream.c     change stream subscribers: catch-up, snapshots, live tail
 *   status.c     admin endpoints (/healthz, /status, /metrics)
 * Everything except the store thread inside committer.c runs on the one
 * event loop. */
#ifndef MP_PRIMARY_H
#define MP_PRIMARY_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "config.h"
#include "metrics.h"
#include "msg.h"
#include "namespace.h"
#include "store.h"
#include "token.h"

struct json_writer;

struct primary_config {
	char *cluster_id;
	char *data_dir;
	char *store;
	char *listen;
	char *admin;
	char *secret_file;
	char *tls_cert;
	char *tls_key;
	char *tls_client_ca;
	bool tls_verify_clients;
	uint64_t max_frame_bytes;
	uint64_t heartbeat_interval_ms;
	uint64_t idle_timeout_ms;
	uint64_t retention_max_versions;
	uint64_t retention_max_age_ms;
	uint64_t retention_hard_cap;
	uint64_t max_batch_writes;
	uint64_t max_connections;
	unsigned log_level;
};

extern const struct config_option primary_config_table[];

/* ---- connections ---- */

enum conn_role { CONN_NEW, CONN_CLIENT, CONN_SUBSCRIBER };

struct conn {
	TAILQ_ENTRY(conn) entry;
	struct primary *p;
	struct bufferevent *bev; /* NULL once closed */
	char peer[64];
	enum conn_role role;
	bool authed;
	bool open_access;           /* no secret configured: everything allowed */
	struct token_claims claims; /* valid when authed && !open_access */
	struct subscriber *sub;
	int refs; /* the connection itself + queued requests holding it */
	bool reading_paused;
	bool closing;            /* conn_close_after_flush: input discarded, output draining */
	unsigned pending_writes; /* submitted, not yet answered: later reads wait */
	bool shut_wr;
};
TAILQ_HEAD(conn_list, conn);

void conn_accept(struct primary *p, evutil_socket_t fd);
void conn_ref(struct conn *c);
void conn_unref(struct conn *c);
/* Every error path ends here: logs reason (if any) and frees the socket. */
void conn_close(struct conn *c, const char *reason);
bool conn_alive(const struct conn *c);
/* Stops serving c but lets what is queued (say, the error that explains
 * why) reach the peer first, then closes; gives up after a few seconds. */
void conn_close_after_flush(struct conn *c, const char *reason);
/* Queues bytes (a whole frame) on the connection; dropped if closed. */
void conn_send(struct conn *c, const void *data, size_t len);
/* Sends ERROR {code, errno, message, version}. */
void conn_send_error(struct conn *c, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool conn_may_write_path(const struct conn *c, const char *path, size_t len);
bool conn_may_read_ino(const struct conn *c, uint64_t ino);
size_t conn_output_len(const struct conn *c);

/* ---- requests (a decoded frame that outlives its read callback) ---- */

struct request {
	TAILQ_ENTRY(request) entry;
	struct conn *c; /* referenced */
	uint32_t type;
	uint64_t id;
	uint8_t *payload;
	struct frame frame;
	/* Filled when a write is executed: the encoded reply frame. */
	uint8_t *reply;
	size_t reply_len;
};
TAILQ_HEAD(request_list, request);

/* Decodes a frame payload (malloc'd; owned by the request from here on,
 * freed on failure too). ret_id gets the id when it could be read. */
int request_decode(struct conn *c, uint8_t *payload, size_t len, struct request **ret,
                   uint64_t *ret_id, char *err, size_t errlen);
void request_free(struct request *r);

/* ---- rpc.c ---- */

bool rpc_is_read(uint32_t type);
bool rpc_is_write(uint32_t type);
/* Answers a read from the (durable) namespace. */
void rpc_read(struct primary *p, struct conn *c, uint32_t type, uint64_t id,
              const msgpack_object *body);
/* Checks a write's access and shape before it is queued; 0 or -errno with
 * a message. */
int rpc_check_write(struct primary *p, struct conn *c, uint32_t type, const msgpack_object *body,
                    char *err, size_t errlen);
/* Executes a write inside txn t; fills the reply result writer later. */
struct txn;
int rpc_execute_write(struct primary *p, struct txn *t, struct conn *c, uint32_t type,
                      const msgpack_object *body, uint64_t *ret_ino, uint64_t **ret_inos,
                      size_t *ret_ninos, char *err, size_t errlen);

/* ---- committer.c ---- */

struct committer;
struct committer *committer_new(struct primary *p, struct store *writer, char **ret_err);
void committer_free(struct committer *cm);
/* Takes ownership of r. */
void committer_submit(struct committer *cm, struct request *r);
/* True while a batch is being written: reads of the namespace then wait. */
bool committer_busy(const struct committer *cm);
size_t committer_queued(const struct committer *cm);
/* Runs fn once the namespace equals the durable state (at once if idle). */
void committer_when_idle(struct committer *cm, void (*fn)(struct primary *p, void *arg), void *arg);
void committer_trim(struct committer *cm, uint64_t below);
bool committer_store_failing(const struct committer *cm);

/* ---- changelog.c ---- */

struct changelog_entry {
	uint64_t version;
	int64_t time;
	uint8_t digest[DIGEST_LEN];
	uint8_t *record;
	size_t record_len;
};

struct changelog;
struct changelog *changelog_new(size_t max_entries, size_t max_bytes);
void changelog_free(struct changelog *l);
/* Takes ownership of e->record. Versions must be appended in order. */
void changelog_append(struct changelog *l, const struct changelog_entry *e);
const struct changelog_entry *changelog_get(const struct changelog *l, uint64_t version);
uint64_t changelog_oldest_cached(const struct changelog *l);
/* Oldest version still in the store's log (0 when empty). */
uint64_t changelog_store_oldest(const struct changelog *l);
void changelog_set_store_oldest(struct changelog *l, uint64_t v);

/* ---- stream.c ---- */

struct subscriber;
void stream_subscribe(struct primary *p, struct conn *c, uint64_t id, const msgpack_object *body);
void stream_ack(struct primary *p, struct conn *c, uint64_t id, const msgpack_object *body);
void stream_detach(struct primary *p, struct conn *c);
/* New durable versions: push to live subscribers. */
void stream_publish(struct primary *p, uint64_t first, uint64_t last);
void stream_heartbeat(struct primary *p);
/* Fills a catching-up subscriber's output up to its watermark. */
void stream_pump(struct primary *p, struct conn *c);
/* Oldest version any subscriber (or recently seen site) still needs. */
uint64_t stream_min_needed(struct primary *p);
void stream_write_status(struct primary *p, struct json_writer *w);
void stream_free_sites(struct primary *p);
void stream_update_metrics(struct primary *p);

/* ---- the process ---- */

struct site_state; /* stream.c */

struct primary {
	struct event_base *base;
	struct primary_config cfg;
	const char *config_path;
	char cluster_id[STORE_CLUSTER_ID_MAX + 1];
	struct namespace *ns;
	uint64_t next_ino;
	uint64_t version;           /* durable */
	uint64_t mem_version;       /* namespace state (durable + batch in flight) */
	uint8_t digest[DIGEST_LEN]; /* of the durable version */
	int64_t version_time;
	struct store *reader; /* change-log reads on the event loop */
	const char *store_kind;
	struct committer *committer;
	struct changelog *log;
	struct conn_list conns;
	size_t nconns;
	struct request_list parked_reads;
	LIST_HEAD(, subscriber) subscribers;
	LIST_HEAD(, site_state) sites;
	uint8_t *secret;
	size_t secret_len;
	SSL_CTX *tls;
	struct netaddr_listener *listener;
	struct admin *admin;
	struct event *sigterm_ev, *sigint_ev, *sighup_ev;
	struct event *heartbeat_ev, *housekeeping_ev;
	struct event *drain_ev;
	bool draining;
	int64_t started;
	/* metrics */
	struct metrics *metrics;
	struct metric *m_version, *m_writes, *m_write_errors, *m_reads, *m_batch_size,
	    *m_commit_seconds, *m_subscribers, *m_lag_versions, *m_lag_seconds, *m_connections,
	    *m_entries, *m_frames_rejected, *m_snapshots;
};

int64_t primary_now_ns(void);
/* Called by the committer after each durable batch. */
void primary_answer_parked(struct primary *p);
void primary_maybe_finish_drain(struct primary *p);
int status_register(struct primary *p);

#endif
