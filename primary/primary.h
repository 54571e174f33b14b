/* mp-primary's shared state and the interfaces between its parts:
 *   main.c       command line, token subcommand
 *   primary_config.c
 *                the configuration: option table, checks, command-line
 *                overrides (kept for reloads)
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

#include "changelog.h"
#include "config.h"
#include "gc.h"
#include "metrics.h"
#include "msg.h"
#include "namespace.h"
#include "primary_config.h"
#include "store.h"
#include "reads.h"
#include "server.h"
#include "stream.h"
#include "token.h"

struct primary;

/* ---- rpc.c ---- */

/* The server's dispatch: a frame after HELLO. Takes r. */
void rpc_dispatch(void *owner, struct conn *c, struct request *r);
/* Answers a read from the durable namespace. */
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
void committer_when_idle(struct committer *cm, void (*fn)(void *ctx), void *ctx);
void committer_trim(struct committer *cm, uint64_t below);
bool committer_store_failing(const struct committer *cm);

/* ---- the process ---- */

struct site_table;
struct primary {
	struct site_table *sites; /* what the tree of mirrors reports */
	struct event_base *base;
	struct primary_config cfg;
	const char *config_path;
	char cluster_id[STORE_CLUSTER_ID_MAX + 1];
	char *origin; /* announced in HELLO_OK: cfg.origin or the default */
	struct namespace *ns;
	uint64_t next_ino;
	uint64_t version;           /* durable */
	uint64_t mem_version;       /* namespace state (durable + batch in flight) */
	uint8_t digest[DIGEST_LEN]; /* of the durable version */
	int64_t version_time;
	struct store *reader; /* change-log reads on the event loop */
	const char *store_kind;
	struct committer *committer;
	struct gc *gc;
	struct changelog *log;
	struct server *server;
	struct streamer *stream;
	struct request_list parked_reads;
	uint8_t *secret;
	size_t secret_len;
	SSL_CTX *tls;
	struct admin *admin;
	struct event *sigterm_ev, *sigint_ev, *sighup_ev;
	struct event *heartbeat_ev, *housekeeping_ev;
	struct event *drain_ev;
	bool draining;
	int64_t started;
	/* metrics */
	struct metrics *metrics;
	struct metric *m_version, *m_writes, *m_write_errors, *m_reads, *m_batch_size,
	    *m_commit_seconds, *m_connections, *m_entries, *m_frames_rejected;
};

/* Runs the daemon until it is stopped; cfg is the running configuration
 * (reloads may replace it: the caller frees what it holds on return). */
int primary_run(struct primary_config *cfg, const char *config_path);
int64_t primary_now_ns(void);
/* Called by the committer after each durable batch. */
void primary_answer_parked(struct primary *p);
void primary_maybe_finish_drain(struct primary *p);
int status_register(struct primary *p);

#endif
