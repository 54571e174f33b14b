/* The protocol server every daemon runs (docs/PROTOCOL.md): a listener,
 * connections carrying length-prefixed msgpack frames (optionally TLS),
 * the HELLO handshake with token checks, backpressure, and teardown. What a
 * frame after HELLO means is the owner's business, through server_ops.
 *
 * Every error path of a connection funnels into conn_close(); a struct conn
 * lives on while queued requests reference it, so a late reply to a closed
 * client is dropped rather than written to freed memory. One event loop
 * thread owns a server and its connections. */
#ifndef MP_SERVER_H
#define MP_SERVER_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "metrics.h"
#include "msg.h"
#include "namespace.h"
#include "token.h"

enum conn_role { CONN_NEW, CONN_CLIENT, CONN_SUBSCRIBER };

struct server;

struct conn {
	TAILQ_ENTRY(conn) entry;
	struct server *srv;
	struct bufferevent *bev; /* NULL once closed */
	char peer[64];
	enum conn_role role;
	bool authed;
	bool open_access;           /* no secret configured: everything allowed */
	struct token_claims claims; /* valid when authed && !open_access */
	int refs;                   /* the connection itself + queued requests */
	bool reading_paused;
	bool closing; /* conn_close_after_flush: input discarded, output draining */
	bool shut_wr;
	/* The owner's. */
	void *sub;               /* change-stream subscriber */
	unsigned pending_writes; /* submitted, not answered: later reads wait */
};
TAILQ_HEAD(conn_list, conn);

/* A decoded frame that can outlive its read callback. */
struct request {
	TAILQ_ENTRY(request) entry;
	struct conn *c; /* referenced */
	uint32_t type;
	uint64_t id;
	uint8_t *payload;
	struct frame frame;
	uint8_t *reply; /* owner's use: an encoded reply frame */
	size_t reply_len;
	int64_t deadline_ns;  /* owner's use */
	uint64_t min_version; /* owner's use */
};
TAILQ_HEAD(request_list, request);

struct server_ops {
	/* A frame after HELLO. Takes r: frees it (request_free) or keeps it. */
	void (*dispatch)(void *owner, struct conn *c, struct request *r);
	/* c is closing (before its socket goes). */
	void (*closed)(void *owner, struct conn *c);
	/* c's output drained below its low watermark. */
	void (*writable)(void *owner, struct conn *c);
	/* The version errors and HELLO_OK report. */
	uint64_t (*version)(void *owner);
};

struct server_config {
	const char *listen;
	const char *role;       /* "primary", "mirror" */
	const char *cluster_id; /* read at each HELLO: may change (a mirror) */
	/* The origin bucket's URL announced in HELLO_OK, read at each HELLO
	 * (a mirror passes on its upstream's); "" or NULL: not known. */
	const char *origin;
	const char *site;      /* a mirror's site name, in HELLO_OK; NULL at the primary */
	SSL_CTX *tls;          /* NULL: plain TCP */
	const uint8_t *secret; /* NULL: open access */
	size_t secret_len;
	uint64_t max_frame_bytes;
	uint64_t idle_timeout_ms;
	uint64_t max_connections;
	bool reuse_port;                  /* SO_REUSEPORT: other loops listen at the same address */
	struct metric *m_connections;     /* may be NULL */
	struct metric *m_frames_rejected; /* may be NULL */
};

/* Listens at once; ret_err (malloc'd) says why not. */
struct server *server_new(struct event_base *base, const struct server_config *cfg,
                          const struct server_ops *ops, void *owner, char **ret_err);
/* Closes every connection and the listener. */
void server_free(struct server *s);
/* Stops accepting (a drain); existing connections go on. */
void server_stop_listening(struct server *s);
uint16_t server_port(const struct server *s);
size_t server_connections(const struct server *s);
bool server_outputs_flushed(const struct server *s);
void server_close_all(struct server *s);
/* Settings a reload may change. */
void server_set_limits(struct server *s, uint64_t max_frame_bytes, uint64_t idle_timeout_ms,
                       uint64_t max_connections);

void conn_ref(struct conn *c);
void conn_unref(struct conn *c);
bool conn_alive(const struct conn *c);
void conn_close(struct conn *c, const char *reason);
/* Stops serving c but lets what is queued (say, the error that explains
 * why) reach the peer first, then closes; gives up after a few seconds. */
void conn_close_after_flush(struct conn *c, const char *reason);
/* Queues bytes (a whole frame) on the connection; dropped if closed. */
void conn_send(struct conn *c, const void *data, size_t len);
/* Queues a frame whose last len bytes come from fd at offset: sent with
 * sendfile from the page cache where the connection is plain TCP. fd stays
 * the caller's (a duplicate is kept while queued). Returns 0 or -errno. */
int conn_send_file(struct conn *c, const void *head, size_t head_len, int fd, uint64_t offset,
                   uint64_t len);
/* Queues a frame whose last len bytes are data, sent without a copy;
 * release(arg) runs once they left (or at once if c is closed). */
void conn_send_reference(struct conn *c, const void *head, size_t head_len, const void *data,
                         size_t len, void (*release)(void *arg), void *arg);
/* Sends ERROR {code, errno, message, version}. */
void conn_send_error(struct conn *c, uint64_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
size_t conn_output_len(const struct conn *c);
/* A subscriber's output: the owner's writable callback runs when it
 * drains below low. */
void conn_set_stream_mode(struct conn *c, size_t low);
bool conn_may_write_path(const struct conn *c, const char *path, size_t len);
/* Whether the token lets c see ino (its subtree, and the ancestors on the
 * way to it). */
bool conn_may_read_ino(const struct conn *c, const struct namespace *ns, uint64_t ino);
/* Does the token limit what c may see at all? */
bool conn_restricted(const struct conn *c);

void request_free(struct request *r);

#endif
