/* The replication worker of a site's mirror: copies the objects of files
 * under the policy's `replicate` rules for this site from their buckets to
 * the rule's site bucket, verifies each copy, and remembers which objects
 * the site holds verified, so that reads use a site copy only once it is
 * there and whole.
 *
 * Division of labour: the mirror's event loop owns the namespace, so it
 * says what is wanted (replication_want for files a version put, a sweep
 * of the whole tree at start, on a policy change and periodically); the
 * worker's threads own everything else: a SQLite table in the data dir
 * (replication.db) with one row per (source bucket, key, etag, site
 * bucket), copier threads, retries with back-off, scrubs, and deletion of
 * replicas whose files were overwritten or removed once the rule's `keep`
 * has passed. The table makes the work durable: after kill -9 every row
 * not yet verified is copied again, nothing else.
 *
 * A replica's key in the site bucket is "<source alias>/<key>", so objects
 * of two buckets never collide. */
#ifndef MP_MIRROR_REPLICATION_H
#define MP_MIRROR_REPLICATION_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

#include "json.h"
#include "metrics.h"
#include "namespace.h"

struct policy;
struct replication;

struct replication_config {
	const char *site;
	const char *data_dir;
	const char *site_config; /* client-format site configuration: bucket aliases */
	uint64_t sweep_interval_ms;
	uint64_t scrub_interval_ms; /* 0: no scrubbing */
	uint64_t retry_max_ms;
	unsigned threads; /* copiers; each rule's concurrency caps its own */
	uint64_t gc_max_delete_count;
	double gc_max_delete_ratio;
};

/* Opens the state in data_dir and starts the threads. Returns 0 or a
 * negative errno with a reason in err. */
int replication_new(const struct replication_config *cfg, struct metrics *metrics,
                    struct replication **ret, char *err, size_t errlen);
/* Stops the threads (the copy in flight is abandoned and redone at the next
 * start) and frees everything. NULL-safe. */
void replication_free(struct replication *r);

/* An operator confirmed a held deletion (the namespace's gc-confirm
 * record changed): the breaker lets the pass due now go. */
void replication_gc_confirm(struct replication *r);

/* The origin URL the upstream announced, for extents in the origin alias. */
void replication_set_origin(struct replication *r, const char *alias, const char *url);

/* Takes a new policy (owned by the worker from now on; NULL: none) and
 * sweeps ns at once. */
void replication_set_policy(struct replication *r, struct policy *p, const struct namespace *ns);
/* A version put the inode: if it is a file under a rule for this site, its
 * objects are wanted. */
void replication_touched(struct replication *r, const struct namespace *ns, uint64_t ino);
/* Walks the whole tree (at start and every sweep_interval while versions
 * arrive): what no rule wants any more is superseded. */
void replication_sweep(struct replication *r, const struct namespace *ns);
bool replication_sweep_due(struct replication *r, int64_t now_ns);

/* The site bucket alias holding a verified copy of the object, or NULL.
 * The result stays valid until the next call on this thread. */
const char *replication_replica_of(struct replication *r, const char *bucket, const char *key,
                                   const char *etag);

/* REPLICATION_STATUS: an array with a map per rule (rule, pending_objects,
 * pending_bytes, verified_objects, verified_bytes, copied_bytes, failures,
 * failing_objects, lag_ms, last_error). An empty array without a worker. */
void replication_pack_status(struct replication *r, msgpack_packer *pk);
/* Pending objects and bytes and failing objects over every rule. */
void replication_totals(struct replication *r, uint64_t *ret_pending, uint64_t *ret_bytes,
                        uint64_t *ret_failing);
/* For /status, /metrics and /healthz. */
void replication_write_status(struct replication *r, struct json_writer *w);
void replication_update_metrics(struct replication *r);
/* Whether copies keep failing (an object failed 3 times or more). */
bool replication_failing(struct replication *r, char *why, size_t whylen);

#endif
