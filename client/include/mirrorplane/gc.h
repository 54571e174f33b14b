/* libmirrorplane: garbage collection at the primary (docs/PROTOCOL.md, GC).
 *
 * Objects a write superseded stay in the origin bucket for the primary's
 * gc.retention, then a GC pass deletes them. A pass that would delete more
 * than gc.max_delete_ratio of the origin's objects or more than
 * gc.max_delete_count is held by a breaker until an operator confirms it.
 * Running or confirming a pass needs a token that may write "/". */
#ifndef MIRRORPLANE_GC_H
#define MIRRORPLANE_GC_H

#include <mirrorplane/mirrorplane.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mp_gc_action {
	MP_GC_STATUS = 0,  /* what the last pass did; nothing runs */
	MP_GC_RUN = 1,     /* run a pass now and answer when it ended */
	MP_GC_CONFIRM = 2, /* let the pass the breaker holds go once, and run it */
} mp_gc_action;

typedef struct mp_gc_status {
	char state[16];         /* "idle", "running" or "held" */
	uint64_t would_delete;  /* the held pass's deletions (0 unless held) */
	char held_reason[200];  /* why the breaker holds it */
	char bucket[64];        /* the origin's alias */
	uint64_t trash_objects; /* on the trash list now */
	uint64_t trash_bytes;
	uint64_t live_objects; /* origin objects referenced, at the last pass */
	uint64_t deleted_total;
	uint64_t deleted_bytes_total;
	uint64_t failures_total;
	uint64_t passes;
	int64_t last_pass_time_ns; /* 0: no pass yet since the primary started */
	uint64_t last_pass_deleted;
	uint64_t last_pass_failed;
	char last_error[512];
	uint64_t retention_ms;
	double max_delete_ratio;
	uint64_t max_delete_count;
	uint64_t version; /* the primary's version when it answered */
} mp_gc_status;

/* Asks the primary; *ret is filled on success (after the pass for RUN and
 * CONFIRM). CONFIRM without a held pass fails with -EINVAL. */
MP_EXPORT int mp_gc(mp_client *c, mp_gc_action action, mp_gc_status *ret, mp_error *err);
/* Tells every site (through a record of the namespace) that deletions of
 * replicas its breaker holds may go, once. call->version gets the version
 * the confirmation took effect at. */
MP_EXPORT int mp_gc_confirm_sites(mp_client *c, mp_call *call, mp_error *err);

#ifdef __cplusplus
}
#endif

#endif
