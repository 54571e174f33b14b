/* Serving the change stream (docs/PROTOCOL.md): subscribers SUBSCRIBE from
 * a version, get a snapshot when the log no longer reaches back that far (or
 * their digest differs), catch up from the in-memory tail or the owner's
 * durable log, then follow live versions; heartbeats when idle, ACKs, lag
 * per site. Output is bounded by watermarks: a slow subscriber is fed as
 * fast as it reads, never buffered without end.
 *
 * The primary serves it from its store; a mirror re-serves what it applied
 * (cascading), reaching back as far as its cache. */
#ifndef MP_STREAM_H
#define MP_STREAM_H

#include <stdint.h>

#include "changelog.h"
#include "metrics.h"
#include "namespace.h"
#include "server.h"

struct json_writer;

struct stream_host {
	void *owner;
	/* The namespace and what it is at; read whenever needed. *ns may be
	 * replaced by the owner (a mirror's bootstrap). */
	struct namespace *const *ns;
	const uint64_t *version;
	const uint8_t *digest;
	const uint64_t *next_ino;
	const char *cluster_id;
	/* The primary's clock as of which this state is known current, sent
	 * in heartbeats so that staleness propagates down a cascade; NULL at
	 * the primary itself (now). */
	const int64_t *fresh_ns;
	struct changelog *log; /* the in-memory tail; its store_oldest is the
	                          oldest version the owner can serve at all */
	/* Reads versions >= from out of the owner's durable log; NULL when
	 * the owner has none beyond the cache. Returns 0 or -errno with err. */
	int (*read_log)(void *owner, uint64_t from, size_t max_count, size_t max_bytes,
	                changelog_read_fn fn, void *arg, char *err, size_t errlen);
	/* Runs fn once the namespace equals *version (at once if it does). */
	void (*when_idle)(void *owner, void (*fn)(void *ctx), void *ctx);
	uint64_t heartbeat_ms;
	uint64_t site_keep_ms; /* how long a gone site still holds log back */
	struct metrics *metrics;
	const char *metric_prefix; /* "mp_primary", "mp_mirror" */
};

struct streamer;

struct streamer *stream_new(const struct stream_host *host);
void stream_free(struct streamer *st);
/* The owner replaced its cache (a mirror's bootstrap). */
void stream_set_log(struct streamer *st, struct changelog *log);
void stream_set_heartbeat(struct streamer *st, uint64_t heartbeat_ms, uint64_t site_keep_ms);

void stream_subscribe(struct streamer *st, struct conn *c, uint64_t id, const msgpack_object *body);
void stream_ack(struct streamer *st, struct conn *c, uint64_t id, const msgpack_object *body);
/* The server's closed callback for subscribers. */
void stream_detach(struct streamer *st, struct conn *c);
/* The server's writable callback: refill a catching-up subscriber. */
void stream_pump(struct streamer *st, struct conn *c);
/* Versions first..last are now published (in the cache): push them. */
void stream_publish(struct streamer *st, uint64_t first, uint64_t last);
/* The owner replaced its whole state (a mirror re-bootstrapped): every
 * subscriber is sent a snapshot. */
void stream_reset(struct streamer *st);
/* The owner has no state worth serving (it is bootstrapping again): every
 * subscriber is disconnected, to reconnect later or elsewhere. */
void stream_disconnect_all(struct streamer *st, const char *why);
void stream_heartbeat(struct streamer *st);
/* Oldest version a subscriber (or a recently seen site) still needs;
 * UINT64_MAX when none. */
uint64_t stream_min_needed(const struct streamer *st);
size_t stream_subscribers(const struct streamer *st);
void stream_write_status(struct streamer *st, struct json_writer *w);
void stream_update_metrics(struct streamer *st);

#endif
