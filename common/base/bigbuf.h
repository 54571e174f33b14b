/* Large buffers (a block, a frame of data, a readahead window) kept for the
 * next use instead of going back to malloc. glibc hands allocations this
 * size out as fresh mappings, or trims them off the heap when freed, so
 * every reuse would fault its pages in again: on a VM that is slower than
 * the copy itself (a cache read ran at half speed on page faults).
 *
 * Process-wide, thread-safe: up to BIGBUF_KEEP_BYTES idle; the rest is
 * freed. Buffers under BIGBUF_MIN go straight to malloc and free. */
#ifndef MP_BIGBUF_H
#define MP_BIGBUF_H

#include <stddef.h>

#define BIGBUF_MIN        (256u << 10)
#define BIGBUF_KEEP_BYTES (96u << 20)

/* A buffer of at least len bytes (uninitialised), NULL when out of memory;
 * give it back with bigbuf_put. */
void *bigbuf_get(size_t len);
/* Gives back a buffer from bigbuf_get. NULL-safe. */
void bigbuf_put(void *p);
/* Bytes held idle now. */
size_t bigbuf_idle_total(void);

#endif
