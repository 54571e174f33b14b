/* Warmup pipelines at a site's mirror: which blocks the site's cache group
 * should hold, and runs that have each cache node fill the blocks it owns.
 *
 * Division of labour (as in replication.h): the event loop owns the
 * namespace, so it decides what a run warms, as of one version (the files
 * of an on-change version under a pipeline's paths, every file under them
 * for once, schedule and ad hoc runs): files -> extents -> objects. A
 * worker thread owns the rest: the objects become blocks at the group's
 * block size, each block goes to its owner by weighted rendezvous hashing
 * among the live nodes (CACHE_WARM, a batch per node; the node fills it
 * through its single flight, skipping what it holds), a node that does not
 * answer is left for the run and its share moves to the next owner, and a
 * run is done only once every block answered as stored and a CACHE_HAS
 * pass found every one at its owner. With evict_previous, the objects the
 * pipeline warmed before that are not under its paths any more are then
 * dropped from every node (CACHE_EVICT). No data passes through the mirror.
 *
 * Runs and their objects are rows of DATA_DIR/warmup.db: after a restart
 * unfinished runs resume with the objects not yet done (whose blocks
 * already cached are answered as such by the nodes, not fetched again). */
#ifndef MP_MIRROR_WARMUP_H
#define MP_MIRROR_WARMUP_H

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "members.h"
#include "metrics.h"
#include "namespace.h"
#include "server.h"

struct policy;
struct warmup;

struct warmup_config {
	const char *site;
	const char *data_dir;
	const char *token;     /* presented to cache nodes; may be NULL */
	const uint8_t *secret; /* signs read grants for the nodes; may be NULL */
	size_t secret_len;
	double clock_scale;  /* schedules: seconds of schedule per second (tests) */
	uint64_t timeout_ms; /* for a CACHE_WARM batch's answer */
};

/* Opens DATA_DIR/warmup.db, loads unfinished runs and starts the worker.
 * Returns 0 or a negative errno with the reason in err. */
int warmup_new(const struct warmup_config *cfg, struct metrics *metrics, struct warmup **ret,
               char *err, size_t errlen);
/* Stops the worker (a run in flight resumes at the next start). NULL-safe. */
void warmup_free(struct warmup *w);

/* On the event loop from here on. */

/* Takes the policy in force (owned from now on; NULL: none). Pipelines
 * triggered once start a run the first time a policy holding them is
 * seen (by the policy's ctime). */
void warmup_set_policy(struct warmup *w, struct policy *p, const struct namespace *ns,
                       uint64_t version, int64_t policy_ctime);
/* A version put ino: a file under an on-change pipeline is noted for the
 * run of that version, started by warmup_applied. */
void warmup_touched(struct warmup *w, const struct namespace *ns, uint64_t ino);
/* The version is applied (commit_ns: its commit time at the primary). */
void warmup_applied(struct warmup *w, const struct namespace *ns, uint64_t version,
                    int64_t commit_ns);
/* Every housekeeping tick: the group's members, and schedules that fell
 * due. */
void warmup_tick(struct warmup *w, const struct namespace *ns, uint64_t version,
                 struct members *members);
/* WARMUP_START and WARMUP_STATUS. Frees r. */
void warmup_dispatch(struct warmup *w, const struct namespace *ns, uint64_t version, struct conn *c,
                     struct request *r);
/* For /status. */
void warmup_write_status(struct warmup *w, struct json_writer *jw);

#endif
