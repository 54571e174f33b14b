/* A file opened for reading through the mount: the version it opened (its
 * node, with the extents), read in windows that a pool of fetcher threads
 * loads ahead of a sequential reader, so that the next window is on its way
 * while the kernel copies out the current one; a random read fetches
 * exactly the bytes it asks for.
 *
 * A sequential reader's depth grows with its streak, one window per read in
 * a row up to READER_AHEAD, so a reader that stops after a few pages never
 * pulls the whole file. Windows are aligned to READER_WINDOW; a read that
 * straddles two is answered from both without a copy (an iovec pair). */
#ifndef MP_MOUNT_READER_H
#define MP_MOUNT_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <mirrorplane/mirrorplane.h>

#define READER_WINDOW (4u << 20)
#define READER_AHEAD  8 /* windows held per reader: the one read and up to 7 ahead */

struct fetch_pool;
struct reader;

/* Starts threads fetchers reading through c (the caller's; it must outlive
 * the pool). */
int fetch_pool_start(mp_client *c, int threads, struct fetch_pool **ret, mp_error *err);
/* Stops and frees the pool; every reader must have been freed before. */
void fetch_pool_stop(struct fetch_pool *p);

/* A reader of *node (moved into the reader: the caller's node is zeroed). */
int reader_new(struct fetch_pool *p, mp_node *node, struct reader **ret);
/* Waits for the reader's fetches in flight, then frees it. NULL-safe. */
void reader_free(struct reader *r);

/* Answers a read of [offset, offset + size): reply is called once with the
 * bytes (cnt 0..2 iovecs, fewer bytes than asked only at the end of the
 * file) while they are held. Returns 0, or a negative errno with err set
 * when the bytes could not be read from any source. */
typedef void (*reader_reply_fn)(void *arg, const struct iovec *iov, int cnt);
int reader_read(struct reader *r, uint64_t offset, size_t size, reader_reply_fn reply, void *arg,
                mp_error *err);

#endif
