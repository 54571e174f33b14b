/* Garbage collection of superseded origin objects (DESIGN.md, "Namespace
 * model"). Two halves:
 *
 *  - the trash list: when a committed transaction takes an object out of a
 *    file's layout (overwrite, truncate, rename over a file, unlink, rmdir),
 *    the committer asks gc_note_txn for trash rows, which the store writes
 *    in the same transaction as the change. Only objects of the origin
 *    alias (gc.bucket) under the prefixes the system uploads to (mp/ and
 *    u/NAME/) are trashed: imported objects never are.
 *  - a pass on its own thread with its own store connection and object
 *    store handle: every gc.interval it deletes the trashed objects older
 *    than gc.retention that no node references (checked against a set of
 *    referenced keys built on the event loop when the namespace equals the
 *    durable state), behind a breaker against mass deletion that holds the
 *    pass until an operator confirms (MT_GC, `mp gc --confirm`).
 *
 * Everything but the pass thread runs on the event loop. */
#ifndef MP_GC_H
#define MP_GC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct primary;
struct txn;
struct conn;
struct request;
struct json_writer;

/* Trash rows collected for one commit batch; owns its strings. */
struct gc_trash {
	struct store_trash *rows;
	size_t n, cap;
	uint32_t *index; /* open addressing over (bucket, key): position+1 */
	size_t capindex;
};

void gc_trash_free(struct gc_trash *t); /* frees the contents, not t */

struct gc;

/* Opens the pass's store connection (url) and the origin object store
 * (p->origin with the gc.s3.* settings), starts the thread and the timer.
 * NULL with *ret_err (malloc'd) on failure. */
struct gc *gc_new(struct primary *p, const char *store_url, char **ret_err);
void gc_free(struct gc *g); /* NULL-safe; waits for a running pass */

/* Settings a reload may change (interval, retention, breaker limits). */
void gc_configure(struct gc *g);

/* Adds to out the objects that txn t (version, time) took out of the
 * layouts it touched. 0 or -ENOMEM. */
int gc_note_txn(struct gc *g, const struct txn *t, uint64_t version, int64_t time,
                struct gc_trash *out);

/* An MT_GC request {action: "status" | "run" | "confirm"}; takes r. The
 * answer to "run" and "confirm" comes when the pass ends. */
void gc_request(struct gc *g, struct conn *c, struct request *r);

/* The "gc" object of /status, and the gauges of /metrics. */
void gc_write_status(struct gc *g, struct json_writer *w);
void gc_update_metrics(struct gc *g);

#endif
