/* A mirror's link to its upstream (the primary, or another mirror): one
 * connection at a time to the first reachable address of an ordered list,
 * HELLO with the site token, SUBSCRIBE from the applied version, then
 * CHANGES, snapshots and heartbeats handed to the owner through callbacks.
 *
 * Whatever goes wrong with an upstream (refused, hung, garbage, a gap in
 * versions) costs a reconnect with exponential back-off and jitter, moving
 * along the address list; the owner decides what a bad record means. */
#ifndef MP_UPSTREAM_H
#define MP_UPSTREAM_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <msgpack.h>
#include <stdint.h>

#include "namespace.h"
#include "node.h"

enum upstream_state {
	UPSTREAM_DISCONNECTED,
	UPSTREAM_CONNECTING,
	UPSTREAM_SNAPSHOT, /* receiving a snapshot */
	UPSTREAM_STREAMING,
};

/* Results of the owner's callbacks. */
enum upstream_verdict {
	UPSTREAM_OK = 0,
	UPSTREAM_RECONNECT = 1,   /* drop the connection and subscribe again */
	UPSTREAM_REBOOTSTRAP = 2, /* the owner reset itself: subscribe from 0 */
};

struct upstream_ops {
	/* The upstream's cluster id and the origin URL it announces ("" when
	 * it announces none), at each connection. REBOOTSTRAP when the owner
	 * had another cluster id and reset itself. */
	enum upstream_verdict (*hello_ok)(void *arg, const char *cluster_id, const char *origin);
	/* Where to subscribe from: the applied version and its digest. */
	uint64_t (*position)(void *arg, uint8_t digest[DIGEST_LEN]);
	/* The subscription was accepted: the upstream is at version; a
	 * snapshot follows when snapshot is set. */
	void (*subscribed)(void *arg, uint64_t upstream_version, bool snapshot);
	/* One change record, in order. Any verdict other than OK drops the
	 * rest of the frame. */
	enum upstream_verdict (*apply)(void *arg, const uint8_t *record, size_t len);
	enum upstream_verdict (*snapshot_begin)(void *arg, uint64_t version,
	                                        const uint8_t digest[DIGEST_LEN], uint64_t count,
	                                        uint64_t next_ino, const char *cluster_id);
	enum upstream_verdict (*snapshot_node)(void *arg, const struct node_rec *rec);
	enum upstream_verdict (*snapshot_end)(void *arg, uint64_t version, uint64_t count);
	/* The upstream said it is ahead of us, or of another cluster: the
	 * owner must discard its state. */
	void (*diverged)(void *arg, const char *why);
	void (*heartbeat)(void *arg, uint64_t upstream_version, int64_t upstream_time_ns);
	void (*state_changed)(void *arg, enum upstream_state state, const char *address);
};

struct upstream_config {
	char **addresses; /* HOST:PORT, in order of preference */
	size_t naddresses;
	const char *site;
	const char *token;    /* may be NULL (open access) */
	SSL_CTX *tls;         /* may be NULL */
	const char *tls_name; /* server name to verify, may be NULL */
	uint64_t backoff_min_ms;
	uint64_t backoff_max_ms;
	uint64_t silence_timeout_ms; /* no frame at all for this long: hung */
	uint64_t max_frame_bytes;
};

struct upstream;

struct upstream *upstream_new(struct event_base *base, const struct upstream_config *cfg,
                              const struct upstream_ops *ops, void *arg);
void upstream_free(struct upstream *u);
void upstream_start(struct upstream *u);
/* Sends ACK{version} when connected. */
void upstream_ack(struct upstream *u, uint64_t version);
/* Sends a built frame on the subscription (nothing when not subscribed). */
void upstream_send(struct upstream *u, msgpack_sbuffer *sb);
/* Drops the connection and subscribes again after a short pause. */
void upstream_reconnect(struct upstream *u, const char *why);
enum upstream_state upstream_state(const struct upstream *u);
const char *upstream_address(const struct upstream *u);
uint64_t upstream_reconnects(const struct upstream *u);
const char *upstream_state_name(enum upstream_state s);

#endif
