/* Transfers shared by files.c, tree.c and import.c. */
#ifndef MP_CLIENT_TRANSFER_H
#define MP_CLIENT_TRANSFER_H

#include "internal.h"

/* Job i of a transfer_run; fills err on failure. */
typedef int (*transfer_job_fn)(void *ctx, size_t i, mp_error *err);
/* Runs jobs 0..count-1 on up to `parallel` threads (the caller's included);
 * stops handing out jobs at the first failure, which it returns. */
int transfer_run(size_t count, int parallel, transfer_job_fn fn, void *ctx, mp_error *err);

/* A range of one extent and where it goes in the file. */
struct chunk {
	const mp_extent *ext;
	uint64_t obj_offset;
	uint64_t length;
	uint64_t file_offset;
	bool whole_extent;
};
int transfer_chunks(const struct mp_client *c, const mp_node *n, struct chunk **ret, size_t *ret_n,
                    mp_error *err);
/* One chunk's bytes, in order, to sink. */
int transfer_fetch(struct mp_client *c, const struct chunk *ch, mp_sink_cb sink, void *arg,
                   struct progress *pr, mp_error *err);

#endif
